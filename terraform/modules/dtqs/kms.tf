# One customer-managed key for the secrets, the log groups, Redis at rest and the alarm
# topic, unless the caller brings one (kms_key_arn).

locals {
  create_kms  = var.kms_key_arn == null
  kms_key_arn = local.create_kms ? aws_kms_key.this[0].arn : var.kms_key_arn
}

resource "aws_kms_key" "this" {
  count                   = local.create_kms ? 1 : 0
  description             = "dtqs ${var.name}: secrets, logs, ElastiCache at rest, alarm topic"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  tags                    = local.tags

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        # The account administers the key through IAM (the AWS default key policy);
        # ElastiCache and Secrets Manager use it on behalf of IAM principals.
        Sid       = "AccountAdministersThroughIam"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        # CloudWatch Logs encrypts this module's log groups only (the WAF's must be
        # named aws-waf-logs-*, so it cannot live under the prefix).
        Sid       = "CloudWatchLogsForDtqsLogGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = [
              "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_prefix}/*",
              "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.waf_log_group_name}",
            ]
          }
        }
      },
      {
        # CloudWatch alarms publish to the encrypted alarm topic (alarms.tf), which
        # needs the key on CloudWatch's behalf (the SNS guide's policy for AWS event
        # sources). Who may publish to the topic is the topic policy's decision.
        Sid       = "CloudWatchAlarmsToEncryptedTopic"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
      },
    ]
  })
}

resource "aws_kms_alias" "this" {
  count         = local.create_kms ? 1 : 0
  name          = "alias/${var.name}-dtqs"
  target_key_id = aws_kms_key.this[0].key_id
}
