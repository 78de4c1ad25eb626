# Example root: dtqs in a new VPC (or an existing one: set vpc_id and the subnet ids).

module "dtqs" {
  source = "../../modules/dtqs"

  name             = var.name
  image            = var.image
  certificate_arn  = var.certificate_arn
  allow_plain_http = var.allow_plain_http

  vpc_id             = var.vpc_id
  private_subnet_ids = var.private_subnet_ids
  public_subnet_ids  = var.public_subnet_ids

  queues               = var.queues
  worker_grace_seconds = var.worker_grace_seconds
  worker_min_count     = var.worker_min_count
  worker_max_count     = var.worker_max_count
  worker_load_per_task = var.worker_load_per_task
  api_token_names      = var.api_token_names

  alb_deletion_protection = var.alb_deletion_protection
  alarm_sns_topic_arn     = var.alarm_sns_topic_arn
  enable_waf              = var.enable_waf
}
