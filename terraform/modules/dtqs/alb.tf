# The API behind an Application Load Balancer.
#
# Health: the target group checks /healthz ("this process serves"), never /readyz. ECS
# replaces a task that fails its ELB health check, and /readyz answers 503 while Redis
# is unusable: a failover or maintenance longer than the unhealthy window would have
# replaced every API task at once. An ALB has no separate readiness check, so during a
# Redis outage it keeps routing to live tasks and dtqs answers 503 with Retry-After.
#
# Edge: the listener that serves the API forwards only the public routes (the REST
# API and the health probes); anything else, /metrics and /openapi.json included, gets
# a 404 from the ALB itself. Scrape /metrics inside the VPC (security.tf).

locals {
  # Path patterns (ALB wildcards: * any run of characters, ? one character) forwarded
  # to the API. A rule holds at most five condition values, hence the groups. An
  # allow-list rather than a deny-list of /metrics: a percent-encoded path such as
  # /%6Detrics is decoded by waitress into /metrics, and an ALB pattern cannot name
  # "%", but it cannot reach a route outside these prefixes either.
  public_path_groups = [
    ["/v1/*", "/tasks", "/tasks/*"], # the REST API (and its legacy /tasks routes)
    ["/healthz", "/readyz", "/health"],
  ]
  # The listener that serves the API: HTTPS, or plain HTTP when allowed without one.
  api_listener_arn = var.certificate_arn == null ? aws_lb_listener.http.arn : aws_lb_listener.https[0].arn
}

resource "aws_lb" "api" {
  #checkov:skip=CKV2_AWS_28:A WAF web ACL with a per-IP rate rule is attached when enable_waf = true (waf.tf); off by default because the right rate depends on the producers (terraform/README.md).
  #checkov:skip=CKV2_AWS_76:The WAF (enable_waf) has AWS's known-bad-inputs rules, Log4j's among them; the anonymous-IP list this check also wants blocks cloud hosting providers, where a task queue's producers usually run.
  name                       = "${var.name}-api"
  load_balancer_type         = "application"
  internal                   = var.alb_internal
  security_groups            = [aws_security_group.alb.id]
  subnets                    = local.alb_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  # Above the API's longest ?wait= long-poll (30 s), below waitress's --idle-timeout
  # (api_idle_timeout_seconds; a precondition in main.tf keeps that order).
  idle_timeout = var.alb_idle_timeout_seconds
  tags         = local.tags

  dynamic "access_logs" {
    for_each = var.alb_access_logs_bucket == null ? [] : [var.alb_access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "api" {
  #checkov:skip=CKV_AWS_378:waitress serves plain HTTP; ALB-to-task traffic stays in private subnets, and only the ALB's security group may reach port 8080.
  name     = "${var.name}-api"
  port     = local.api_port
  protocol = "HTTP"
  # Long-polls last up to 30 s; --drain answers the rest when SIGTERM follows.
  deregistration_delay = 30
  target_type          = "ip"
  vpc_id               = local.vpc_id
  tags                 = local.tags

  # Liveness only (see the top of this file). A task is replaced after 4 failed checks
  # 15 s apart, each allowed 10 s: a minute of a process that does not answer at all.
  health_check {
    path                = local.liveness_path
    port                = tostring(local.api_port)
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 15
    timeout             = 10
    healthy_threshold   = 2
    unhealthy_threshold = 4
  }
}

# Port 80: a redirect to HTTPS when there is a certificate; the API itself only with
# allow_plain_http (main.tf refuses neither).
resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.api.arn
  port              = 80
  protocol          = "HTTP"
  tags              = local.tags

  default_action {
    type = var.certificate_arn == null ? "fixed-response" : "redirect"

    dynamic "fixed_response" {
      for_each = var.certificate_arn == null ? [1] : []
      content {
        content_type = "application/json"
        message_body = local.not_found_body
        status_code  = "404"
      }
    }

    dynamic "redirect" {
      for_each = var.certificate_arn == null ? [] : [1]
      content {
        port        = "443"
        protocol    = "HTTPS"
        status_code = "HTTP_301"
      }
    }
  }
}

resource "aws_lb_listener" "https" {
  count             = var.certificate_arn == null ? 0 : 1
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  tags              = local.tags

  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      message_body = local.not_found_body
      status_code  = "404"
    }
  }
}

locals {
  not_found_body = jsonencode({ title = "Not Found", status = 404 })
}

# The public routes, forwarded to the API tasks on the serving listener.
resource "aws_lb_listener_rule" "public" {
  count        = length(local.public_path_groups)
  listener_arn = local.api_listener_arn
  priority     = 10 + count.index
  tags         = local.tags

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }

  condition {
    path_pattern {
      values = local.public_path_groups[count.index]
    }
  }
}
