# One customer-managed key for the secrets, the log groups and Redis at rest, unless
# the caller brings one (kms_key_arn).

locals {
  create_kms  = var.kms_key_arn == null
  kms_key_arn = local.create_kms ? aws_kms_key.this[0].arn : var.kms_key_arn
}

resource "aws_kms_key" "this" {
  count                   = local.create_kms ? 1 : 0
  description             = "dtqs ${var.name}: secrets, logs, ElastiCache at rest"
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
        # CloudWatch Logs encrypts this module's log groups only.
        Sid       = "CloudWatchLogsForDtqsLogGroups"
        Effect    = "Allow"
        Principal = { Service = "logs.${local.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_prefix}/*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "this" {
  count         = local.create_kms ? 1 : 0
  name          = "alias/${var.name}-dtqs"
  target_key_id = aws_kms_key.this[0].key_id
}
