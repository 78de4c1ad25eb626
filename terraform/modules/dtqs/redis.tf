# The broker: an ElastiCache Valkey/Redis replication group, cluster mode disabled (one
# primary, replicas in other AZs), Multi-AZ with automatic failover, TLS and AUTH, and
# encrypted at rest.
#
# Durability: ElastiCache does not offer AOF on replication groups (Redis >= 2.8.22 and
# Valkey), so dtqs relies on the Multi-AZ replicas. At-least-once delivery holds except
# for writes the primary acknowledged but had not yet replicated when it failed over.
#
# Data safety: daily snapshots kept redis_snapshot_retention_days, and a final snapshot
# when the group is destroyed (or replaced). There is no prevent_destroy here on
# purpose (lifecycle arguments cannot be variables, and a module that hard-codes it
# cannot be destroyed, nor tested, by anyone): terraform/README.md says how to guard it.

locals {
  redis_group_id = "${var.name}-dtqs"
  # ElastiCache names the nodes of a cluster-mode-disabled group <group id>-001, -002…
  redis_node_ids = [for i in range(var.redis_node_count) : format("%s-%03d", local.redis_group_id, i + 1)]
  # A destroy (or a replacement) leaves this snapshot; destroying again while it still
  # exists fails, which keeps the older snapshot from being overwritten.
  redis_final_snapshot = "${local.redis_group_id}-final"
  redis_logs = {
    engine-log = "${local.log_group_prefix}/redis-engine-log"
    slow-log   = "${local.log_group_prefix}/redis-slow-log"
  }
}

resource "aws_elasticache_subnet_group" "this" {
  name        = "${var.name}-dtqs"
  description = "dtqs ${var.name}: private subnets of the replication group"
  subnet_ids  = local.private_subnet_ids
  tags        = local.tags
}

resource "aws_elasticache_parameter_group" "this" {
  name        = "${var.name}-dtqs-${var.redis_parameter_group_family}"
  family      = var.redis_parameter_group_family
  description = "dtqs ${var.name}: never evict task keys"
  tags        = local.tags

  # dtqs keeps tasks as keys: eviction would lose them silently. With noeviction a full
  # Redis refuses writes (dtqs answers 503) and /readyz reports any other policy.
  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# The engine log (failovers, replica syncs, restarts) and the slow log, encrypted like
# the module's other log groups.
resource "aws_cloudwatch_log_group" "redis" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (default 30); a year of logs is a cost decision for the operator.
  for_each          = local.redis_logs
  name              = each.value
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
  tags              = local.tags
}

moved {
  from = aws_cloudwatch_log_group.redis_slow
  to   = aws_cloudwatch_log_group.redis["slow-log"]
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = local.redis_group_id
  description          = "dtqs ${var.name} broker"
  engine               = var.redis_engine
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  num_cache_clusters   = var.redis_node_count
  port                 = local.redis_port
  parameter_group_name = aws_elasticache_parameter_group.this.name
  subnet_group_name    = aws_elasticache_subnet_group.this.name
  security_group_ids   = [aws_security_group.redis.id]

  automatic_failover_enabled = true
  multi_az_enabled           = true

  at_rest_encryption_enabled = true
  kms_key_id                 = local.kms_key_arn
  transit_encryption_enabled = true
  auth_token                 = local.redis_auth_token

  snapshot_retention_limit   = var.redis_snapshot_retention_days
  snapshot_window            = var.redis_snapshot_window
  final_snapshot_identifier  = local.redis_final_snapshot
  maintenance_window         = var.redis_maintenance_window
  auto_minor_version_upgrade = true
  apply_immediately          = false
  tags                       = local.tags

  dynamic "log_delivery_configuration" {
    for_each = local.redis_logs
    content {
      destination      = aws_cloudwatch_log_group.redis[log_delivery_configuration.key].name
      destination_type = "cloudwatch-logs"
      log_format       = "json"
      log_type         = log_delivery_configuration.key
    }
  }
}
