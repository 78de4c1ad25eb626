# dtqs on AWS: ECS Fargate services (api, worker, scheduler) from one image, an ALB in
# front of the API, and an ElastiCache Valkey/Redis replication group as the broker.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  # What dtqs serves and emits; tests/deploy/test_terraform.py checks these against
  # the dtqs code (the API's routes, the scheduler's CloudWatch EMF output).
  api_port          = 8080
  readiness_path    = "/readyz" # 503 while Redis is unusable: the ALB routes around it
  redis_port        = 6379
  metric_namespace  = "dtqs"
  backlog_metric    = "Backlog"
  queue_dimension   = "Queue"
  emf_env           = "DTQS_CLOUDWATCH_EMF"
  log_group_prefix  = "/dtqs/${var.name}"
  stop_grace_margin = 15

  # ECS sends SIGTERM, waits stopTimeout, then SIGKILL; the worker's grace must end
  # first. Fargate caps stopTimeout at 120 s (variables.tf keeps grace <= 110).
  worker_stop_timeout = min(var.worker_grace_seconds + local.stop_grace_margin, 120)

  tags = merge({ "app" = "dtqs", "dtqs:name" = var.name }, var.tags)
}

# Rules that involve several variables (validation blocks see only their own on
# terraform < 1.9). terraform_data comes with terraform itself: no extra provider.
resource "terraform_data" "inputs" {
  input = var.name

  lifecycle {
    precondition {
      condition     = var.vpc_id == null || (length(var.private_subnet_ids) >= 2 && length(var.public_subnet_ids) >= 2)
      error_message = "With vpc_id, give at least two private_subnet_ids and two public_subnet_ids (in different AZs): Multi-AZ Redis and the ALB need two AZs."
    }
    precondition {
      condition     = var.vpc_id != null || (length(var.private_subnet_ids) == 0 && length(var.public_subnet_ids) == 0)
      error_message = "private_subnet_ids and public_subnet_ids are only used with vpc_id; without vpc_id the module creates its own subnets."
    }
    precondition {
      condition     = var.worker_min_count <= var.worker_max_count
      error_message = "worker_min_count must not exceed worker_max_count."
    }
    precondition {
      condition     = startswith(var.redis_parameter_group_family, var.redis_engine)
      error_message = "redis_parameter_group_family must belong to redis_engine (valkey8 for valkey, redis7 for redis)."
    }
  }
}
