output "api_url" {
  description = "Base URL of the dtqs REST API."
  value       = module.dtqs.api_url
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the ElastiCache replication group."
  value       = module.dtqs.redis_primary_endpoint
}

output "redis_url_secret_arn" {
  description = "Secret holding DTQS_REDIS_URL."
  value       = module.dtqs.redis_url_secret_arn
}

output "api_token_secret_arns" {
  description = "Secret of each API token."
  value       = module.dtqs.api_token_secret_arns
}

output "task_role_name" {
  description = "Role to attach your handlers' AWS permissions to."
  value       = module.dtqs.task_role_name
}

output "alarm_topic_arn" {
  description = "SNS topic the alarms notify: subscribe to it."
  value       = module.dtqs.alarm_topic_arn
}
