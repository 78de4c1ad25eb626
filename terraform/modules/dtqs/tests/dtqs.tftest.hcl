# `terraform test` with a mocked AWS provider: no credentials, no network. Plans and
# "applies" against mocks, then checks the wiring dtqs depends on. The runs share one
# state, in order: counts_follow_their_variables updates what new_vpc_wiring applied.

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
  mock_resource "aws_lb_listener" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/dtqs-api/0123456789abcdef/fedcba9876543210" }
  }
  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:eu-west-1:123456789012:dtqs-dtqs-alarms" }
  }
  mock_resource "aws_wafv2_web_acl" {
    defaults = { arn = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/dtqs-dtqs-api/0123-4567" }
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
    condition     = alltrue([for s in concat(values(aws_ecs_service.this), [aws_ecs_service.worker]) : !s.network_configuration[0].assign_public_ip])
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

  # Redis data safety: a final snapshot on destroy, daily snapshots, engine and slow
  # logs in encrypted log groups
  assert {
    condition = (aws_elasticache_replication_group.this.final_snapshot_identifier == "dtqs-dtqs-final"
      && aws_elasticache_replication_group.this.snapshot_retention_limit == 7
    && aws_elasticache_replication_group.this.snapshot_window == "03:00-04:00")
    error_message = "a final snapshot on destroy and 7 days of daily snapshots are expected"
  }
  assert {
    condition = (toset([for d in aws_elasticache_replication_group.this.log_delivery_configuration : d.log_type]) == toset(["engine-log", "slow-log"])
      && alltrue([for d in aws_elasticache_replication_group.this.log_delivery_configuration : d.destination == aws_cloudwatch_log_group.redis[d.log_type].name && d.destination_type == "cloudwatch-logs"])
    && alltrue([for g in aws_cloudwatch_log_group.redis : g.kms_key_id == aws_kms_key.this[0].arn]))
    error_message = "engine and slow logs must go to their own KMS-encrypted log groups"
  }

  # containers: commands, secrets (never plain env), stop timeouts above grace and drain
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].command == ["dtqs", "worker", "--grace", "30", "--queues", "default,emails"]
    error_message = "worker command"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this["api"].container_definitions)[0].command == ["dtqs", "api", "--host", "0.0.0.0", "--port", "8080", "--idle-timeout", "75", "--drain", "20"]
    error_message = "the api command must pass --idle-timeout 75 (above the ALB's 60 s) and --drain 20"
  }
  assert {
    condition     = aws_lb.api.idle_timeout == 60 && aws_lb.api.idle_timeout < 75
    error_message = "the ALB's idle timeout (60 s) must stay below waitress's (75 s)"
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
    condition     = jsondecode(aws_ecs_task_definition.this["api"].container_definitions)[0].stopTimeout == 35
    error_message = "api stopTimeout must be drain + 15 = 35"
  }
  assert {
    condition = alltrue([for svc in ["api", "worker", "scheduler"] :
      contains([for s in jsondecode(aws_ecs_task_definition.this[svc].container_definitions)[0].secrets : s.name], "DTQS_REDIS_URL")
      && !contains([for e in jsondecode(aws_ecs_task_definition.this[svc].container_definitions)[0].environment : e.name], "DTQS_REDIS_URL")
    ])
    error_message = "DTQS_REDIS_URL must come from secrets in every service, never from environment"
  }
  assert {
    condition = (contains(jsondecode(aws_ecs_task_definition.this["scheduler"].container_definitions)[0].environment, { name = "DTQS_CLOUDWATCH_EMF", value = "1" })
    && contains(jsondecode(aws_ecs_task_definition.this["scheduler"].container_definitions)[0].environment, { name = "DTQS_DEPLOYMENT", value = "dtqs" }))
    error_message = "the scheduler must publish the EMF metrics with Deployment = name"
  }
  assert {
    condition     = !contains([for e in jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].environment : e.name], "DTQS_CLOUDWATCH_EMF")
    error_message = "only the scheduler emits EMF"
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].environment, { name = "DTQS_SCALE_IN_PROTECTION_MINUTES", value = "60" })
    error_message = "the worker must get DTQS_SCALE_IN_PROTECTION_MINUTES from worker_scale_in_protection_minutes"
  }

  # ALB: liveness (/healthz) on 8080 with headroom, HTTPS with a redirect from 80
  assert {
    condition = (aws_lb_target_group.api.health_check[0].path == "/healthz" && aws_lb_target_group.api.port == 8080
      && aws_lb_target_group.api.health_check[0].timeout >= 10
    && aws_lb_target_group.api.health_check[0].unhealthy_threshold * aws_lb_target_group.api.health_check[0].interval >= 60)
    error_message = "the target group must check /healthz (never /readyz, which ECS would treat as liveness) with a minute of headroom"
  }
  assert {
    condition     = length(aws_lb_listener.https) == 1 && aws_lb_listener.http.default_action[0].type == "redirect"
    error_message = "with a certificate, 443 serves and 80 redirects"
  }
  assert {
    condition     = output.api_url == "https://dtqs-api-123.eu-west-1.elb.amazonaws.com"
    error_message = "api_url"
  }

  # the edge: the HTTPS listener answers 404 itself and forwards only the public routes
  assert {
    condition = (aws_lb_listener.https[0].default_action[0].type == "fixed-response"
    && aws_lb_listener.https[0].default_action[0].fixed_response[0].status_code == "404")
    error_message = "the serving listener must answer 404 to anything not forwarded"
  }
  assert {
    condition = alltrue([for r in aws_lb_listener_rule.public :
      r.listener_arn == aws_lb_listener.https[0].arn && r.action[0].type == "forward" && r.action[0].target_group_arn == aws_lb_target_group.api.arn
    ])
    error_message = "the public routes are forwarded on the HTTPS listener"
  }
  assert {
    condition     = toset(flatten([for r in aws_lb_listener_rule.public : one(r.condition).path_pattern[0].values])) == toset(["/v1/*", "/tasks", "/tasks/*", "/healthz", "/readyz", "/health"])
    error_message = "only the REST API and the probes are forwarded (never /metrics or /openapi.json)"
  }

  # autoscaling: (Backlog + InFlight) of this deployment's queues per running worker task
  assert {
    condition = toset([for m in aws_appautoscaling_policy.worker_load.target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].metrics :
      "${m.metric_stat[0].metric[0].metric_name}:${join(",", [for d in m.metric_stat[0].metric[0].dimensions : "${d.name}=${d.value}"])}" if try(m.metric_stat[0].metric[0].namespace == "dtqs", false)
      ]) == toset([
      "Backlog:Deployment=dtqs,Queue=default", "InFlight:Deployment=dtqs,Queue=default",
      "Backlog:Deployment=dtqs,Queue=emails", "InFlight:Deployment=dtqs,Queue=emails",
    ])
    error_message = "Backlog and InFlight of each queue, of this deployment only"
  }
  assert {
    condition     = one([for m in aws_appautoscaling_policy.worker_load.target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].metrics : m.expression if m.return_data]) == "(backlog0 + inflight0 + backlog1 + inflight1) / IF(tasks > 1, tasks, 1)"
    error_message = "load per task: no FILL, so missing metrics leave the worker count alone"
  }
  assert {
    condition     = aws_appautoscaling_target.worker.resource_id == "service/dtqs/worker"
    error_message = "the scaling target is the worker service"
  }

  # IAM: the task role may set scale-in protection of this cluster's tasks, nothing else
  assert {
    condition = (jsondecode(aws_iam_role_policy.task_protection.policy).Statement[0].Action == ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"]
      && jsondecode(aws_iam_role_policy.task_protection.policy).Statement[0].Resource == ["arn:aws:ecs:eu-west-1:123456789012:task/dtqs/*"]
    && aws_iam_role_policy.task_protection.role == aws_iam_role.task.id)
    error_message = "the task role needs ecs:UpdateTaskProtection/GetTaskProtection on this cluster's tasks"
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

  # alarms: each notifies the created, KMS-encrypted topic
  assert {
    condition     = length(aws_sns_topic.alarms) == 1 && aws_sns_topic.alarms[0].kms_master_key_id == aws_kms_key.this[0].arn
    error_message = "without alarm_sns_topic_arn an encrypted topic is created"
  }
  assert {
    condition = alltrue([for a in concat(
      values(aws_cloudwatch_metric_alarm.redis_memory), values(aws_cloudwatch_metric_alarm.redis_replication_lag),
      values(aws_cloudwatch_metric_alarm.ecs_below_desired), [aws_cloudwatch_metric_alarm.alb_target_5xx, aws_cloudwatch_metric_alarm.alb_elb_5xx],
      values(aws_cloudwatch_metric_alarm.oldest_task_age), values(aws_cloudwatch_metric_alarm.metrics_missing),
    ) : a.alarm_actions == toset([aws_sns_topic.alarms[0].arn]) && a.ok_actions == toset([aws_sns_topic.alarms[0].arn])])
    error_message = "every alarm notifies the topic on ALARM and OK"
  }
  assert {
    condition     = length(output.alarm_names) == 2 + 2 + 3 + 2 + 2 + 2
    error_message = "memory and lag per node, below-desired per service, two 5xx, oldest age and metrics-missing per queue"
  }
  assert {
    condition     = toset(keys(aws_cloudwatch_metric_alarm.redis_memory)) == toset(["dtqs-dtqs-001", "dtqs-dtqs-002"])
    error_message = "one memory alarm per node, named as ElastiCache names the nodes"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.oldest_task_age["emails"].dimensions == tomap({ Deployment = "dtqs", Queue = "emails" }) && aws_cloudwatch_metric_alarm.oldest_task_age["emails"].namespace == "dtqs"
    error_message = "the oldest-age alarm reads this deployment's queue"
  }
  assert {
    condition = alltrue([for svc, a in aws_cloudwatch_metric_alarm.ecs_below_desired :
      alltrue([for q in a.metric_query : q.metric[0].dimensions == tomap({ ClusterName = "dtqs", ServiceName = svc }) if length(q.metric) > 0])
    ])
    error_message = "each below-desired alarm reads its own service"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.alb_target_5xx.dimensions.LoadBalancer == aws_lb.api.arn_suffix
    error_message = "the 5xx alarm reads this ALB"
  }
  assert {
    condition     = length(aws_wafv2_web_acl.api) == 0 && output.waf_web_acl_arn == null
    error_message = "no WAF unless enable_waf"
  }
}

# ignore_changes = [desired_count] belongs to the autoscaled worker service only: the
# api and scheduler counts follow their variables after the first apply.
run "counts_follow_their_variables" {
  command = apply

  variables {
    queues            = ["default", "emails"]
    api_desired_count = 3
    scheduler_count   = 3
    worker_min_count  = 2
  }

  assert {
    condition     = aws_ecs_service.this["api"].desired_count == 3
    error_message = "changing api_desired_count after the first apply must change the api service"
  }
  assert {
    condition     = aws_ecs_service.this["scheduler"].desired_count == 3
    error_message = "changing scheduler_count after the first apply must change the scheduler service"
  }
  assert {
    condition     = aws_ecs_service.worker.desired_count == 1 && aws_appautoscaling_target.worker.min_capacity == 2
    error_message = "the worker count belongs to autoscaling: terraform changes its bounds, not its desired count"
  }
}

run "existing_vpc_http_and_grace_limit" {
  command = apply

  variables {
    vpc_id                      = "vpc-0123456789abcdef0"
    private_subnet_ids          = ["subnet-0000000000000000a", "subnet-0000000000000000b"]
    public_subnet_ids           = ["subnet-0000000000000000c", "subnet-0000000000000000d"]
    certificate_arn             = null
    allow_plain_http            = true
    image                       = "ghcr.io/example/app:2.0"
    worker_grace_seconds        = 110
    redis_auth_token_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:my-token-AbCdEf"
  }

  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_nat_gateway.this) == 0 && length(aws_flow_log.this) == 0
    error_message = "no VPC resources are created with vpc_id"
  }
  assert {
    condition     = toset(aws_ecs_service.worker.network_configuration[0].subnets) == toset(["subnet-0000000000000000a", "subnet-0000000000000000b"])
    error_message = "tasks run in the given private subnets"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].stopTimeout == 120
    error_message = "stopTimeout is capped at Fargate's 120 s and still above a 110 s grace"
  }
  assert {
    condition = (length(aws_lb_listener.https) == 0 && output.api_url == "http://dtqs-api-123.eu-west-1.elb.amazonaws.com"
      && aws_lb_listener.http.default_action[0].type == "fixed-response"
    && alltrue([for r in aws_lb_listener_rule.public : r.listener_arn == aws_lb_listener.http.arn]))
    error_message = "with allow_plain_http and no certificate port 80 serves the public routes and 404s the rest"
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

# Another deployment (name) in the same account: its own Deployment dimension; WAF,
# scrapers and an existing alarm topic.
run "staging_with_waf_scrapers_and_own_topic" {
  command = apply

  variables {
    name                               = "staging"
    enable_waf                         = true
    waf_rate_limit                     = 5000
    metrics_scraper_security_group_ids = ["sg-0123456789abcdef0"]
    metrics_scraper_cidrs              = ["10.40.0.0/16"]
    alarm_sns_topic_arn                = "arn:aws:sns:eu-west-1:123456789012:oncall"
    worker_scale_in_protection_minutes = 180
  }

  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.this["scheduler"].container_definitions)[0].environment, { name = "DTQS_DEPLOYMENT", value = "staging" })
    error_message = "the scheduler publishes under Deployment = staging"
  }
  assert {
    condition = alltrue([for m in aws_appautoscaling_policy.worker_load.target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].metrics :
      contains([for d in m.metric_stat[0].metric[0].dimensions : "${d.name}=${d.value}"], "Deployment=staging") if try(m.metric_stat[0].metric[0].namespace == "dtqs", false)
    ])
    error_message = "staging's workers scale on staging's metrics only"
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.this["worker"].container_definitions)[0].environment, { name = "DTQS_SCALE_IN_PROTECTION_MINUTES", value = "180" })
    error_message = "DTQS_SCALE_IN_PROTECTION_MINUTES follows its variable"
  }
  assert {
    condition = (length(aws_wafv2_web_acl_association.api) == 1 && aws_wafv2_web_acl_association.api[0].resource_arn == aws_lb.api.arn
      && one([for r in aws_wafv2_web_acl.api[0].rule : r.statement[0].rate_based_statement[0].limit if r.name == "rate-limit-per-ip"]) == 5000
    && one([for r in aws_wafv2_web_acl.api[0].rule : r.statement[0].rate_based_statement[0].aggregate_key_type if r.name == "rate-limit-per-ip"]) == "IP")
    error_message = "enable_waf attaches a web ACL with a per-IP rate rule to the ALB"
  }
  assert {
    condition = (aws_wafv2_web_acl_logging_configuration.api[0].redacted_fields[0].single_header[0].name == "authorization"
    && startswith(aws_cloudwatch_log_group.waf[0].name, "aws-waf-logs-"))
    error_message = "the WAF log keeps bearer tokens out and goes to an aws-waf-logs- group"
  }
  assert {
    condition = (toset([for r in aws_vpc_security_group_ingress_rule.api_from_scraper_sgs : "${r.referenced_security_group_id}:${r.from_port}"]) == toset(["sg-0123456789abcdef0:8080"])
    && toset([for r in aws_vpc_security_group_ingress_rule.api_from_scraper_cidrs : "${r.cidr_ipv4}:${r.from_port}"]) == toset(["10.40.0.0/16:8080"]))
    error_message = "the scrapers may reach the API tasks on 8080"
  }
  assert {
    condition     = length(aws_sns_topic.alarms) == 0 && output.alarm_topic_arn == "arn:aws:sns:eu-west-1:123456789012:oncall" && aws_cloudwatch_metric_alarm.alb_elb_5xx.alarm_actions == toset(["arn:aws:sns:eu-west-1:123456789012:oncall"])
    error_message = "alarms go to the given topic, none is created"
  }
}

run "rejects_plain_http_without_opt_in" {
  command = plan
  variables {
    certificate_arn = null
  }
  expect_failures = [terraform_data.inputs]
}

run "rejects_worker_stop_timeout_within_grace" {
  command = plan
  variables {
    worker_grace_seconds        = 30
    worker_stop_timeout_seconds = 32
  }
  expect_failures = [terraform_data.inputs]
}

run "rejects_api_idle_timeout_not_above_the_albs" {
  command = plan
  variables {
    alb_idle_timeout_seconds = 90
  }
  expect_failures = [terraform_data.inputs]
}

run "rejects_more_queues_than_one_scaling_alarm_takes" {
  command = plan
  variables {
    queues = ["a", "b", "c", "d", "e"]
  }
  expect_failures = [var.queues]
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
