# Who talks to whom: clients -> ALB -> api:8080; your metrics scrapers -> api:8080
# (/metrics, inside the VPC); api, worker, scheduler -> Redis:6379; tasks -> HTTPS for
# ECR, Secrets Manager, CloudWatch Logs and the ECS task-protection API (through NAT or
# VPC endpoints). Nothing else.

resource "aws_security_group" "alb" {
  name_prefix = "${var.name}-alb-"
  description = "dtqs ${var.name}: load balancer in front of the API"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "api" {
  name_prefix = "${var.name}-api-"
  description = "dtqs ${var.name}: API tasks, reachable from the ALB only"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-api" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-tasks-"
  description = "dtqs ${var.name}: worker and scheduler tasks, no inbound traffic"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-tasks" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "redis" {
  name_prefix = "${var.name}-redis-"
  description = "dtqs ${var.name}: ElastiCache, reachable from the dtqs tasks on 6379 only"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-redis" })

  lifecycle {
    create_before_destroy = true
  }
}

locals {
  listener_ports = var.certificate_arn == null ? [80] : [80, 443]
  # ingress rules need one resource per CIDR and port
  alb_ingress = { for pair in setproduct(var.alb_ingress_cidrs, local.listener_ports) : "${pair[0]}:${pair[1]}" => { cidr = pair[0], port = pair[1] } }
  task_sgs    = { api = aws_security_group.api.id, tasks = aws_security_group.tasks.id }
}

resource "aws_vpc_security_group_ingress_rule" "alb_clients" {
  for_each          = local.alb_ingress
  security_group_id = aws_security_group.alb.id
  description       = "Clients to the ALB listener on ${each.value.port}"
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
}

resource "aws_vpc_security_group_egress_rule" "alb_to_api" {
  security_group_id            = aws_security_group.alb.id
  description                  = "ALB to the API tasks"
  referenced_security_group_id = aws_security_group.api.id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

resource "aws_vpc_security_group_ingress_rule" "api_from_alb" {
  security_group_id            = aws_security_group.api.id
  description                  = "API port from the ALB only"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

# Prometheus, an ADOT collector or the CloudWatch agent scrapes /metrics from each API
# task's private IP on 8080; the ALB does not serve /metrics (alb.tf).
resource "aws_vpc_security_group_ingress_rule" "api_from_scraper_sgs" {
  for_each                     = toset(var.metrics_scraper_security_group_ids)
  security_group_id            = aws_security_group.api.id
  description                  = "Metrics scraper to the API port (/metrics)"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

resource "aws_vpc_security_group_ingress_rule" "api_from_scraper_cidrs" {
  for_each          = toset(var.metrics_scraper_cidrs)
  security_group_id = aws_security_group.api.id
  description       = "Metrics scraper to the API port (/metrics)"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.api_port
  to_port           = local.api_port
}

resource "aws_vpc_security_group_egress_rule" "tasks_to_redis" {
  for_each                     = local.task_sgs
  security_group_id            = each.value
  description                  = "dtqs tasks to Redis"
  referenced_security_group_id = aws_security_group.redis.id
  ip_protocol                  = "tcp"
  from_port                    = local.redis_port
  to_port                      = local.redis_port
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  for_each          = local.task_sgs
  security_group_id = each.value
  description       = "HTTPS to ECR, Secrets Manager, CloudWatch Logs and ECS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_tasks" {
  for_each                     = local.task_sgs
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from the dtqs ${each.key} tasks"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.redis_port
  to_port                      = local.redis_port
}
