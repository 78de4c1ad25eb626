# `terraform test` with a mocked AWS provider: no credentials, no network. Plans and
# "applies" against mocks, then checks the wiring dtqs depends on.

mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = { names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"] }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_secretsmanager_random_password" {
    defaults = { random_password = "generatedtoken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN" }
  }
  mock_data "aws_secretsmanager_secret_version" {
    defaults = { secret_string = "existing:token#with?specials%" }
  }
  mock_resource "aws_elasticache_replication_group" {
    defaults = { primary_endpoint_address = "master.dtqs-dtqs.abc123.euw1.cache.amazonaws.com" }
  }
  mock_resource "aws_lb" {
    defaults = {
      dns_name = "dtqs-api-123.eu-west-1.elb.amazonaws.com"
      arn      = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/dtqs-api/0123456789abcdef"
    }
  }
  # The provider validates ARN arguments even against mocks: give ARN-shaped values.
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/dtqs-api/0123456789abcdef" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/dtqs-role" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/dtqs/dtqs/x" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dtqs/x-AbCdEf" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/dtqs:1" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:123456789012:cluster/dtqs", id = "arn:aws:ecs:eu-west-1:123456789012:cluster/dtqs" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555" }
  }
}

variables {
  image           = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1.0.0"
  certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
}

run "new_vpc_wiring" {
  command = apply

  variables {
    queues = ["default", "emails"]
  }

  # network: a new VPC over two AZs, tasks and Redis in private subnets
  assert {
    condition     = length(aws_vpc.this) == 1 && length(aws_subnet.private) == 2 && length(aws_nat_gateway.this) == 2
    error_message = "a new VPC with two private subnets and a NAT gateway per AZ is expected"
  }
  assert {
    condition     = alltrue([for s in aws_ecs_service.this : !s.network_configuration[0].assign_public_ip])
    error_message = "tasks must not get public IPs"
  }

  # Redis: Multi-AZ, failover, encryption, noeviction, AUTH from Secrets Manager
  assert {
    condition = (aws_elasticache_replication_group.this.multi_az_enabled
      && aws_elasticache_replication_group.this.automatic_failover_enabled
      && aws_elasticache_replication_group.this.at_rest_encryption_enabled
    && aws_elasticache_replication_group.this.transit_encryption_enabled)
    error_message = "the replication group must be Multi-AZ with failover and encrypted"
  }
  assert {
    condition     = one([for p in aws_elasticache_parameter_group.this.parameter : p.value if p.name == "maxmemory-policy"]) == "noeviction"
    error_message = "maxmemory-policy must be noeviction"
  }
  assert {
    condition     = aws_elasticache_replication_group.this.auth_token == aws_secretsmanager_secret_version.redis_auth[0].secret_string
    error_message = "the AUTH token must be the one stored in Secrets Manager"
  }
  assert {
    condition     = aws_secretsmanager_secret_version.redis_url.secret_string == "rediss://:generatedtoken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN@master.dtqs-dtqs.abc123.euw1.cache.amazonaws.com:6379/0"
    error_message = "DTQS_REDIS_URL must be rediss://:<token>@<primary endpoint>:6379/0"
  }

  # containers: commands, secrets (never plain env), stopTimeout above the grace
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].command == ["dtqs", "worker", "--grace", "30", "--queues", "default,emails"]
    error_message = "worker command"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this["api"].container_definitions)[0].command == ["dtqs", "api", "--host", "0.0.0.0", "--port", "8080"]
    error_message = "api command"
  }
  assert {
    condition = alltrue([for svc in ["api", "worker", "scheduler"] :
      jsondecode(aws_ecs_task_definition.this[svc].container_definitions)[0].entryPoint == ["tini", "--"]
      && jsondecode(aws_ecs_task_definition.this[svc].container_definitions)[0].healthCheck.command == ["CMD", "dtqs-healthcheck"]
    ])
    error_message = "every container runs tini -- dtqs ... and the image's health check"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].stopTimeout == 45
    error_message = "worker stopTimeout must be grace + 15 = 45"
  }
  assert {
    condition = alltrue([for svc in ["api", "worker", "scheduler"] :
      contains([for s in jsondecode(aws_ecs_task_definition.this[svc].container_definitions)[0].secrets : s.name], "DTQS_REDIS_URL")
      && !contains([for e in jsondecode(aws_ecs_task_definition.this[svc].container_definitions)[0].environment : e.name], "DTQS_REDIS_URL")
    ])
    error_message = "DTQS_REDIS_URL must come from secrets in every service, never from environment"
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.this["scheduler"].container_definitions)[0].environment, { name = "DTQS_CLOUDWATCH_EMF", value = "1" })
    error_message = "the scheduler must publish the EMF metrics"
  }
  assert {
    condition     = !contains([for e in jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].environment : e.name], "DTQS_CLOUDWATCH_EMF")
    error_message = "only the scheduler emits EMF"
  }

  # ALB: /readyz on 8080, HTTPS with a redirect from 80
  assert {
    condition     = aws_lb_target_group.api.health_check[0].path == "/readyz" && aws_lb_target_group.api.port == 8080
    error_message = "target group must check /readyz on 8080"
  }
  assert {
    condition     = length(aws_lb_listener.https) == 1 && aws_lb_listener.http.default_action[0].type == "redirect"
    error_message = "with a certificate, 443 serves and 80 redirects"
  }
  assert {
    condition     = output.api_url == "https://dtqs-api-123.eu-west-1.elb.amazonaws.com"
    error_message = "api_url"
  }

  # autoscaling: dtqs/Backlog per queue, divided by the running worker tasks
  assert {
    condition = toset([for m in aws_appautoscaling_policy.worker_backlog.target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].metrics :
      one(m.metric_stat[0].metric[0].dimensions).value if try(m.metric_stat[0].metric[0].namespace == "dtqs" && m.metric_stat[0].metric[0].metric_name == "Backlog", false)
    ]) == toset(["default", "emails"])
    error_message = "one dtqs/Backlog metric per queue"
  }
  assert {
    condition     = one([for m in aws_appautoscaling_policy.worker_backlog.target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].metrics : m.expression if m.return_data]) == "(FILL(backlog0, 0) + FILL(backlog1, 0)) / IF(tasks > 1, tasks, 1)"
    error_message = "backlog per task expression"
  }

  # IAM: the execution role reads only the injected secrets and pulls only the image's repository
  assert {
    condition = toset(one([for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Resource if s.Sid == "ReadInjectedSecrets"])) == toset(concat(
      [aws_secretsmanager_secret.redis_url.arn], [for s in aws_secretsmanager_secret.api_token : s.arn]
    ))
    error_message = "the execution role must read exactly the injected secrets"
  }
  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s.Resource if s.Sid == "PullTheImage"]) == ["arn:aws:ecr:eu-west-1:123456789012:repository/team/app"]
    error_message = "the execution role must pull from the image's repository only"
  }
}

run "existing_vpc_http_and_grace_limit" {
  command = apply

  variables {
    vpc_id                      = "vpc-0123456789abcdef0"
    private_subnet_ids          = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
    public_subnet_ids           = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
    certificate_arn             = null
    image                       = "ghcr.io/example/app:2.0"
    worker_grace_seconds        = 110
    redis_auth_token_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:my-token-AbCdEf"
  }

  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_nat_gateway.this) == 0 && length(aws_flow_log.this) == 0
    error_message = "no VPC resources are created with vpc_id"
  }
  assert {
    condition     = toset(aws_ecs_service.this["worker"].network_configuration[0].subnets) == toset(["subnet-0000000000000000a", "subnet-0000000000000000b"])
    error_message = "tasks run in the given private subnets"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].stopTimeout == 120
    error_message = "stopTimeout is capped at Fargate's 120 s and still above a 110 s grace"
  }
  assert {
    condition     = aws_lb_listener.http.default_action[0].type == "forward" && length(aws_lb_listener.https) == 0 && output.api_url == "http://dtqs-api-123.eu-west-1.elb.amazonaws.com"
    error_message = "without a certificate port 80 forwards to the API"
  }
  assert {
    condition     = length(aws_secretsmanager_secret.redis_auth) == 0 && output.redis_auth_token_secret_arn == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:my-token-AbCdEf"
    error_message = "an existing AUTH token secret is used, none generated"
  }
  assert {
    condition     = aws_secretsmanager_secret_version.redis_url.secret_string == "rediss://:existing%3Atoken%23with%3Fspecials%25@master.dtqs-dtqs.abc123.euw1.cache.amazonaws.com:6379/0"
    error_message = "the token is URL-encoded in DTQS_REDIS_URL"
  }
  assert {
    condition     = length([for s in jsondecode(aws_iam_role_policy.execution.policy).Statement : s if startswith(s.Sid, "Ecr") || s.Sid == "PullTheImage"]) == 0
    error_message = "an image outside ECR needs no ECR permissions"
  }
}

run "rejects_grace_fargate_cannot_honour" {
  command = plan
  variables {
    worker_grace_seconds = 115
  }
  expect_failures = [var.worker_grace_seconds]
}

run "rejects_latest_tag" {
  command = plan
  variables {
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:latest"
  }
  expect_failures = [var.image]
}

run "rejects_bad_queue_name" {
  command = plan
  variables {
    queues = ["Default"]
  }
  expect_failures = [var.queues]
}

run "rejects_existing_vpc_without_subnets" {
  command = plan
  variables {
    vpc_id = "vpc-0123456789abcdef0"
  }
  expect_failures = [terraform_data.inputs]
}

run "rejects_family_of_other_engine" {
  command = plan
  variables {
    redis_engine = "redis"
  }
  expect_failures = [terraform_data.inputs]
}
