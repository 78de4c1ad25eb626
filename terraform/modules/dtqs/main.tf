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
  api_port = 8080
  # Liveness: answered by the server's own I/O thread, never by Redis. ECS replaces a
  # task whose ELB health check fails, so the ALB must not check /readyz: a Redis
  # failover longer than the unhealthy window would replace every API task at once.
  liveness_path        = "/healthz"
  redis_port           = 6379
  metric_namespace     = "dtqs"
  backlog_metric       = "Backlog"
  in_flight_metric     = "InFlight"
  queue_dimension      = "Queue"
  deployment_dimension = "Deployment"
  emf_env              = "DTQS_CLOUDWATCH_EMF"
  deployment_env       = "DTQS_DEPLOYMENT"
  protection_env       = "DTQS_SCALE_IN_PROTECTION_MINUTES"
  log_group_prefix     = "/dtqs/${var.name}"
  stop_grace_margin    = 15 # default room between a grace/drain and SIGKILL
  release_margin       = 5  # least room a worker needs after its grace to release tasks

  # ECS sends SIGTERM, waits stopTimeout, then SIGKILL. Fargate caps stopTimeout at
  # 120 s. The worker's grace and the API's drain must end first (preconditions below).
  worker_stop_timeout = coalesce(var.worker_stop_timeout_seconds, min(var.worker_grace_seconds + local.stop_grace_margin, 120))
  api_stop_timeout    = min(var.api_drain_seconds + local.stop_grace_margin, 120)

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
    precondition {
      condition     = var.certificate_arn != null || var.allow_plain_http
      error_message = "Without certificate_arn the API would be served in plain HTTP, Bearer tokens in clear. Give an ACM certificate_arn, or set allow_plain_http = true for a trial."
    }
    precondition {
      condition     = local.worker_stop_timeout >= var.worker_grace_seconds + local.release_margin
      error_message = "The worker's stopTimeout must exceed worker_grace_seconds by at least 5 s, so a stopping worker can release the tasks its grace did not finish before SIGKILL."
    }
    precondition {
      condition     = local.api_stop_timeout > var.api_drain_seconds
      error_message = "The API's stopTimeout must exceed api_drain_seconds."
    }
    precondition {
      condition     = var.api_idle_timeout_seconds > var.alb_idle_timeout_seconds
      error_message = "api_idle_timeout_seconds must exceed alb_idle_timeout_seconds: the ALB must close idle connections before waitress does, or it may reuse one waitress is closing and answer 502."
    }
  }
}
