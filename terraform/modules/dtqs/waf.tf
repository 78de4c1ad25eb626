# Optional AWS WAF in front of the ALB (enable_waf): a per-client-IP rate limit, AWS's
# known-bad-inputs rules (request patterns of known exploits, e.g. Log4Shell), and the
# WAF log in CloudWatch Logs. Off by default: a per-IP limit that suits one deployment
# blocks another's batch producer behind a single NAT address, and dtqs's own limits
# (body size, long-poll slots) already bound what one request costs.

locals {
  # WAF sends logs only to log groups whose name starts with aws-waf-logs-.
  waf_log_group_name = "aws-waf-logs-${var.name}-dtqs"
  waf_metric_prefix  = replace("${var.name}-dtqs", "-", "_")
}

resource "aws_wafv2_web_acl" "api" {
  count       = var.enable_waf ? 1 : 0
  name        = "${var.name}-dtqs-api"
  description = "dtqs ${var.name}: rate limit per client IP and known bad inputs"
  scope       = "REGIONAL"
  tags        = local.tags

  default_action {
    allow {}
  }

  rule {
    name     = "rate-limit-per-ip"
    priority = 1

    action {
      block {}
    }

    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit
        aggregate_key_type = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.waf_metric_prefix}_rate_limit"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-known-bad-inputs"
    priority = 2

    override_action {
      none {}
    }

    statement {
      managed_rule_group_statement {
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
        vendor_name = "AWS"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.waf_metric_prefix}_known_bad_inputs"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${local.waf_metric_prefix}_api"
    sampled_requests_enabled   = true
  }
}

resource "aws_wafv2_web_acl_association" "api" {
  count        = var.enable_waf ? 1 : 0
  resource_arn = aws_lb.api.arn
  web_acl_arn  = aws_wafv2_web_acl.api[0].arn
}

resource "aws_cloudwatch_log_group" "waf" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (default 30); a year of logs is a cost decision for the operator.
  count             = var.enable_waf ? 1 : 0
  name              = local.waf_log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
  tags              = local.tags
}

resource "aws_wafv2_web_acl_logging_configuration" "api" {
  count                   = var.enable_waf ? 1 : 0
  resource_arn            = aws_wafv2_web_acl.api[0].arn
  log_destination_configs = [aws_cloudwatch_log_group.waf[0].arn]

  # The bearer token must not reach the log.
  redacted_fields {
    single_header {
      name = "authorization"
    }
  }
}
