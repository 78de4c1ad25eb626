# One cluster, three services from one image. Each container gets DTQS_REDIS_URL and
# the API tokens from Secrets Manager; the scheduler also prints the CloudWatch EMF
# metrics (DTQS_CLOUDWATCH_EMF=1, DTQS_DEPLOYMENT=<name>) that the worker autoscaling
# and the alarms read.

locals {
  services = ["api", "worker", "scheduler"]

  worker_command = concat(
    ["dtqs", "worker", "--grace", tostring(var.worker_grace_seconds), "--queues", join(",", var.queues)],
    var.worker_processes == null ? [] : ["--processes", tostring(var.worker_processes)],
  )
  commands = {
    api = ["dtqs", "api", "--host", "0.0.0.0", "--port", tostring(local.api_port),
      "--idle-timeout", tostring(var.api_idle_timeout_seconds), "--drain", tostring(var.api_drain_seconds),
    ]
    worker    = local.worker_command
    scheduler = ["dtqs", "scheduler"]
  }

  base_environment = merge(
    var.environment,
    var.config_path == null ? {} : { DTQS_CONFIG = var.config_path },
    { PYTHONUNBUFFERED = "1" }, # EMF lines and logs reach CloudWatch at once
  )
  environments = {
    api = local.base_environment
    # The worker PUTs $ECS_AGENT_URI/task-protection/v1/state itself while it holds
    # leased tasks (ECS sets ECS_AGENT_URI); the task role allows it (iam.tf).
    worker = merge(local.base_environment, { (local.protection_env) = tostring(var.worker_scale_in_protection_minutes) })
    # The Deployment dimension keeps two deployments in one account and region (e.g.
    # staging and prod) from publishing, and scaling on, the same series.
    scheduler = merge(local.base_environment, { (local.emf_env) = "1", (local.deployment_env) = var.name })
  }

  # As the repository's Dockerfile: tini is PID 1 and hands SIGTERM straight to dtqs.
  # Set here so that `command` can name the whole dtqs command line.
  entry_point = ["tini", "--"]

  # The image's own check (deploy/compose/healthcheck.py), which ECS does not run by
  # itself: for the api GET /healthz (liveness, never Redis), for a worker a live worker
  # process, for the scheduler a running process. ECS replaces a container that fails
  # it `retries` times in a row; the timeout leaves room for a loaded task.
  health_check = {
    command     = ["CMD", "dtqs-healthcheck"]
    interval    = 15
    timeout     = 10
    retries     = 3
    startPeriod = 30
  }

  stop_timeouts = {
    api       = local.api_stop_timeout    # --drain + margin (after the ALB has drained the target)
    worker    = local.worker_stop_timeout # --grace + margin: unfinished tasks are released
    scheduler = 30
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
        # SIGTERM, then SIGKILL after stopTimeout: workers finish within their grace,
        # the API drains within --drain.
        stopTimeout = local.stop_timeouts[svc]
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

  # The services with a fixed count, which terraform keeps at their variables. The
  # worker service is apart: Application Auto Scaling owns its count.
  fixed_counts = {
    api       = var.api_desired_count
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
  for_each               = local.fixed_counts
  name                   = each.key
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.this[each.key].arn
  desired_count          = each.value
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = false
  propagate_tags         = "SERVICE"
  tags                   = local.tags

  # Time for a new API task to start and pass its first ELB health checks.
  health_check_grace_period_seconds = each.key == "api" ? 60 : null

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

  # The target group must belong to the ALB (through a listener rule) before ECS
  # registers tasks in it.
  depends_on = [aws_lb_listener_rule.public, aws_iam_role_policy.execution]
}

# The workers: scaled by Application Auto Scaling (autoscaling.tf), so terraform sets
# the count once and then leaves it alone. Busy worker tasks protect themselves from
# scale-in and deployments (ECS task scale-in protection).
resource "aws_ecs_service" "worker" {
  name                   = "worker"
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.this["worker"].arn
  desired_count          = var.worker_min_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  enable_execute_command = false
  propagate_tags         = "SERVICE"
  tags                   = local.tags

  network_configuration {
    subnets          = local.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    # The count belongs to Application Auto Scaling after the first apply.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.task_protection]
}

# The worker service was aws_ecs_service.this["worker"] before the count split.
moved {
  from = aws_ecs_service.this["worker"]
  to   = aws_ecs_service.worker
}
