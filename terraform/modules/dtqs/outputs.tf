output "api_url" {
  description = "Base URL of the dtqs REST API (the ALB)."
  value       = "${var.certificate_arn == null ? "http" : "https"}://${aws_lb.api.dns_name}"
}

output "alb_dns_name" {
  description = "DNS name of the load balancer, for a CNAME/alias record matching the certificate."
  value       = aws_lb.api.dns_name
}

output "alb_arn" {
  description = "ARN of the load balancer, e.g. to associate a WAF web ACL."
  value       = aws_lb.api.arn
}

output "alb_zone_id" {
  description = "Hosted zone of the load balancer, for a Route 53 alias record."
  value       = aws_lb.api.zone_id
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the replication group (TLS and AUTH required); it follows failovers."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "redis_reader_endpoint" {
  description = "Reader endpoint of the replication group."
  value       = aws_elasticache_replication_group.this.reader_endpoint_address
}

output "redis_port" {
  description = "Port of the replication group."
  value       = local.redis_port
}

output "redis_url_secret_arn" {
  description = "Secrets Manager secret holding DTQS_REDIS_URL (rediss://:<token>@<primary endpoint>:6379/0), e.g. for running dtqs commands from a bastion."
  value       = aws_secretsmanager_secret.redis_url.arn
}

output "redis_auth_token_secret_arn" {
  description = "Secrets Manager secret holding the Redis AUTH token."
  value       = local.redis_auth_secret_arn
}

output "api_token_secret_arns" {
  description = "Secrets Manager secret of each API token, by environment variable name."
  value       = { for n in var.api_token_names : n => aws_secretsmanager_secret.api_token[n].arn }
}

output "ecs_cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "ecs_service_names" {
  description = "ECS service of api, worker and scheduler."
  value       = local.ecs_service_names
}

output "log_group_names" {
  description = "CloudWatch log groups: api, worker and scheduler (the scheduler's carries the EMF metrics), redis-engine-log and redis-slow-log."
  value = merge(
    { for k, g in aws_cloudwatch_log_group.service : k => g.name },
    { for k, g in aws_cloudwatch_log_group.redis : "redis-${k}" => g.name },
  )
}

output "task_role_name" {
  description = "IAM role of the dtqs processes (only ECS task scale-in protection): attach what your handlers need."
  value       = aws_iam_role.task.name
}

output "security_group_ids" {
  description = "Security groups: alb, api (API tasks), tasks (worker and scheduler), redis."
  value = {
    alb   = aws_security_group.alb.id
    api   = aws_security_group.api.id
    tasks = aws_security_group.tasks.id
    redis = aws_security_group.redis.id
  }
}

output "vpc_id" {
  description = "The VPC used (created or given)."
  value       = local.vpc_id
}

output "worker_stop_timeout" {
  description = "stopTimeout of the worker container: seconds between SIGTERM and SIGKILL, above worker_grace_seconds."
  value       = local.worker_stop_timeout
}

output "api_stop_timeout" {
  description = "stopTimeout of the API container: seconds between SIGTERM and SIGKILL, above api_drain_seconds."
  value       = local.api_stop_timeout
}

output "alarm_topic_arn" {
  description = "SNS topic the CloudWatch alarms notify (created unless alarm_sns_topic_arn was given): subscribe your on-call to it."
  value       = local.alarm_topic_arn
}

output "alarm_names" {
  description = "Names of the module's CloudWatch alarms."
  value = concat(
    [for a in aws_cloudwatch_metric_alarm.redis_memory : a.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.redis_replication_lag : a.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.ecs_below_desired : a.alarm_name],
    [aws_cloudwatch_metric_alarm.alb_target_5xx.alarm_name, aws_cloudwatch_metric_alarm.alb_elb_5xx.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.oldest_task_age : a.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.metrics_missing : a.alarm_name],
  )
}

output "waf_web_acl_arn" {
  description = "The WAF web ACL on the ALB (enable_waf), or null."
  value       = var.enable_waf ? aws_wafv2_web_acl.api[0].arn : null
}

output "redis_final_snapshot_name" {
  description = "Name of the snapshot ElastiCache takes when the replication group is destroyed or replaced."
  value       = local.redis_final_snapshot
}
