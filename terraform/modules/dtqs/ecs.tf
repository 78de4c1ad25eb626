# One cluster, three services from one image. Each container gets DTQS_REDIS_URL and
# the API tokens from Secrets Manager; the scheduler also prints the CloudWatch EMF
# metrics (DTQS_CLOUDWATCH_EMF=1) that the worker autoscaling reads.

locals {
  services = ["api", "worker", "scheduler"]

  worker_command = concat(
    ["dtqs", "worker", "--grace", tostring(var.worker_grace_seconds), "--queues", join(",", var.queues)],
    var.worker_processes == null ? [] : ["--processes", tostring(var.worker_processes)],
  )
  commands = {
    api       = ["dtqs", "api", "--host", "0.0.0.0", "--port", tostring(local.api_port)]
    worker    = local.worker_command
    scheduler = ["dtqs", "scheduler"]
  }

  base_environment = merge(
    var.environment,
    var.config_path == null ? {} : { DTQS_CONFIG = var.config_path },
    { PYTHONUNBUFFERED = "1" }, # EMF lines and logs reach CloudWatch at once
  )
  environments = {
    api       = local.base_environment
    worker    = local.base_environment
    scheduler = merge(local.base_environment, { (local.emf_env) = "1" })
  }

  # As the repository's Dockerfile: tini is PID 1 and hands SIGTERM straight to dtqs.
  # Set here so that `command` can name the whole dtqs command line.
  entry_point = ["tini", "--"]

  # The image's own check (deploy/compose/healthcheck.py), which ECS does not run by
  # itself: for the api GET /healthz (liveness, never Redis; readiness is the ALB's
  # /readyz), for a worker a live worker process, for the scheduler a running process.
  health_check = {
    command     = ["CMD", "dtqs-healthcheck"]
    interval    = 15
    timeout     = 5
    retries     = 3
    startPeriod = 20
  }

  service_extras = {
    api       = { portMappings = [{ containerPort = local.api_port, protocol = "tcp" }] }
    worker    = {}
    scheduler = {}
  }

  container_definitions = {
    for svc in local.services : svc => [merge(
      {
        name                   = svc
        image                  = var.image
        essential              = true
        entryPoint             = local.entry_point
        command                = local.commands[svc]
        healthCheck            = local.health_check
        environment            = [for k in sort(keys(local.environments[svc])) : { name = k, value = local.environments[svc][k] }]
        secrets                = local.container_secrets
        readonlyRootFilesystem = var.readonly_root_filesystem
        mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
        # SIGTERM, then SIGKILL after stopTimeout: workers finish within their grace.
        stopTimeout = svc == "worker" ? local.worker_stop_timeout : 30
        logConfiguration = {
          logDriver = "awslogs"
          options = {
            "awslogs-group"         = aws_cloudwatch_log_group.service[svc].name
            "awslogs-region"        = local.region
            "awslogs-stream-prefix" = svc
          }
        }
      },
      local.service_extras[svc],
    )]
  }

  desired_counts = {
    api       = var.api_desired_count
    worker    = var.worker_min_count
    scheduler = var.scheduler_count
  }
}

resource "aws_cloudwatch_log_group" "service" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (default 30); a year of logs is a cost decision for the operator.
  for_each          = toset(local.services)
  name              = "${local.log_group_prefix}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
  tags              = local.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  tags = local.tags

  # Container Insights provides RunningTaskCount, the divisor of backlog per task.
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_ecs_task_definition" "this" {
  for_each                 = toset(local.services)
  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_sizes[each.key].cpu
  memory                   = var.task_sizes[each.key].memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(local.container_definitions[each.key])
  tags                     = local.tags

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Task-local scratch space, so the root filesystem can stay read-only.
  volume {
    name = "tmp"
  }
}

resource "aws_ecs_service" "this" {
  for_each               = toset(local.services)
  name                   = each.key
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.this[each.key].arn
  desired_count          = local.desired_counts[each.key]
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = false
  propagate_tags         = "SERVICE"
  tags                   = local.tags

  health_check_grace_period_seconds = each.key == "api" ? 30 : null

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [each.key == "api" ? aws_security_group.api.id : aws_security_group.tasks.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  dynamic "load_balancer" {
    for_each = each.key == "api" ? [1] : []
    content {
      target_group_arn = aws_lb_target_group.api.arn
      container_name   = "api"
      container_port   = local.api_port
    }
  }

  lifecycle {
    # The worker count belongs to Application Auto Scaling after the first apply.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.http, aws_iam_role_policy.execution]
}
