# Secrets Manager holds the Redis AUTH token, the full DTQS_REDIS_URL built from it, and
# the API tokens. ECS injects them into the containers (task definition `secrets`), so
# no secret appears in a task definition or in plain environment variables.
#
# Generated values come from the aws_secretsmanager_random_password data source (no
# extra provider); ignore_changes keeps the first one, since the data source yields a
# new password on every plan. Note that terraform state holds these values: keep the
# state in an encrypted backend.

locals {
  generate_auth_token = var.redis_auth_token_secret_arn == null
  redis_auth_token = (local.generate_auth_token
    ? aws_secretsmanager_secret_version.redis_auth[0].secret_string
  : data.aws_secretsmanager_secret_version.redis_auth[0].secret_string)
  redis_auth_secret_arn = local.generate_auth_token ? aws_secretsmanager_secret.redis_auth[0].arn : var.redis_auth_token_secret_arn

  # rediss:// = TLS (transit encryption is on), empty user = the AUTH token, database 0.
  redis_url = format(
    "rediss://:%s@%s:%d/0",
    urlencode(local.redis_auth_token),
    aws_elasticache_replication_group.this.primary_endpoint_address,
    local.redis_port,
  )
}

data "aws_secretsmanager_random_password" "redis_auth" {
  count               = local.generate_auth_token ? 1 : 0
  password_length     = 64
  exclude_punctuation = true # ElastiCache refuses @ " / and the URL stays plain
}

resource "aws_secretsmanager_secret" "redis_auth" {
  #checkov:skip=CKV2_AWS_57:Rotating the AUTH token needs an ElastiCache ROTATE/SET sequence and a redeploy of the services; see terraform/README.md.
  count                   = local.generate_auth_token ? 1 : 0
  name_prefix             = "${var.name}/redis-auth-token-"
  description             = "dtqs ${var.name}: ElastiCache AUTH token"
  kms_key_id              = local.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "redis_auth" {
  count         = local.generate_auth_token ? 1 : 0
  secret_id     = aws_secretsmanager_secret.redis_auth[0].id
  secret_string = data.aws_secretsmanager_random_password.redis_auth[0].random_password

  lifecycle {
    ignore_changes = [secret_string]
  }
}

data "aws_secretsmanager_secret_version" "redis_auth" {
  count     = local.generate_auth_token ? 0 : 1
  secret_id = var.redis_auth_token_secret_arn
}

resource "aws_secretsmanager_secret" "redis_url" {
  #checkov:skip=CKV2_AWS_57:Derived from the AUTH token by terraform; it changes when the token does.
  name_prefix             = "${var.name}/redis-url-"
  description             = "dtqs ${var.name}: DTQS_REDIS_URL (rediss://:<token>@<primary endpoint>:6379/0)"
  kms_key_id              = local.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "redis_url" {
  secret_id     = aws_secretsmanager_secret.redis_url.id
  secret_string = local.redis_url
}

data "aws_secretsmanager_random_password" "api_token" {
  for_each            = toset(var.api_token_names)
  password_length     = 48
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "api_token" {
  #checkov:skip=CKV2_AWS_57:dtqs reads API tokens at start-up; rotate by writing a new secret version and redeploying (terraform/README.md).
  for_each                = toset(var.api_token_names)
  name_prefix             = "${var.name}/${lower(replace(each.key, "_", "-"))}-"
  description             = "dtqs ${var.name}: API bearer token read by the manifest as $${${each.key}}"
  kms_key_id              = local.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "api_token" {
  for_each      = toset(var.api_token_names)
  secret_id     = aws_secretsmanager_secret.api_token[each.key].id
  secret_string = data.aws_secretsmanager_random_password.api_token[each.key].random_password

  lifecycle {
    ignore_changes = [secret_string]
  }
}

locals {
  # The task definitions' `secrets`: the environment variable each secret becomes.
  container_secrets = concat(
    [{ name = "DTQS_REDIS_URL", valueFrom = aws_secretsmanager_secret.redis_url.arn }],
    [for n in var.api_token_names : { name = n, valueFrom = aws_secretsmanager_secret.api_token[n].arn }],
  )
  # What the execution role may read, and nothing else. The AUTH-token secret is not
  # among them: the tasks only need the URL.
  readable_secret_arns = [for s in local.container_secrets : s.valueFrom]
}
