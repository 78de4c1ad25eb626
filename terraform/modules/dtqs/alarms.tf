# CloudWatch alarms, all notifying one SNS topic (alarm_sns_topic_arn, or one created
# here) on ALARM and on OK:
# - ElastiCache: memory near full (with noeviction a full Redis refuses new tasks) and
#   replica lag (what a failover would lose);
# - ECS: fewer running tasks than desired, per service;
# - ALB: 5xx answered by the API tasks (dtqs's 503 while Redis is unusable) and by the
#   ALB itself (no healthy target, a connection refused);
# - dtqs (EMF from the scheduler): the oldest ready task of a queue is too old, and a
#   queue's metrics stopped arriving (the worker autoscaling then stands still).
# Dead letters have no alarm: the scheduler's EMF lines carry no dead-letter count
# (Prometheus has dtqs_queue_dead on /metrics; see terraform/README.md).
#
# Every metric an alarm reads is named once, in local.alarm_metrics;
# tests/deploy/test_terraform.py checks each against dtqs's EMF names and AWS's
# documented metrics and dimensions.

locals {
  alarm_metrics = {
    redis_memory = {
      namespace = "AWS/ElastiCache", name = "DatabaseMemoryUsagePercentage", dimensions = ["CacheClusterId"]
    }
    redis_replication_lag = {
      namespace = "AWS/ElastiCache", name = "ReplicationLag", dimensions = ["CacheClusterId"]
    }
    running_tasks = {
      namespace = "ECS/ContainerInsights", name = "RunningTaskCount", dimensions = ["ClusterName", "ServiceName"]
    }
    desired_tasks = {
      namespace = "ECS/ContainerInsights", name = "DesiredTaskCount", dimensions = ["ClusterName", "ServiceName"]
    }
    target_5xx = {
      namespace = "AWS/ApplicationELB", name = "HTTPCode_Target_5XX_Count", dimensions = ["LoadBalancer"]
    }
    elb_5xx = {
      namespace = "AWS/ApplicationELB", name = "HTTPCode_ELB_5XX_Count", dimensions = ["LoadBalancer"]
    }
    oldest_task_age = {
      namespace = local.metric_namespace, name = "OldestTaskAgeSeconds", dimensions = [local.deployment_dimension, local.queue_dimension]
    }
    backlog = {
      namespace = local.metric_namespace, name = local.backlog_metric, dimensions = [local.deployment_dimension, local.queue_dimension]
    }
  }

  create_alarm_topic = var.alarm_sns_topic_arn == null
  alarm_topic_arn    = local.create_alarm_topic ? aws_sns_topic.alarms[0].arn : var.alarm_sns_topic_arn
  alarm_actions      = [local.alarm_topic_arn]
  alarm_prefix       = "${var.name}-dtqs"
  thresholds         = var.alarm_thresholds

  # How long each service may run below its desired count before it alarms: a task
  # replaced after a failed health check is back within a few minutes; new worker tasks
  # take longer while a scale-out pulls the image.
  below_desired_minutes = { api = 5, scheduler = 5, worker = 10 }
  ecs_service_names     = { api = aws_ecs_service.this["api"].name, scheduler = aws_ecs_service.this["scheduler"].name, worker = aws_ecs_service.worker.name }
}

resource "aws_sns_topic" "alarms" {
  count             = local.create_alarm_topic ? 1 : 0
  name              = "${local.alarm_prefix}-alarms"
  kms_master_key_id = local.kms_key_arn
  tags              = local.tags
}

# CloudWatch alarms of this account may publish; nobody else.
resource "aws_sns_topic_policy" "alarms" {
  count = local.create_alarm_topic ? 1 : 0
  arn   = aws_sns_topic.alarms[0].arn
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "CloudWatchAlarmsOfThisAccount"
      Effect    = "Allow"
      Principal = { Service = "cloudwatch.amazonaws.com" }
      Action    = "sns:Publish"
      Resource  = aws_sns_topic.alarms[0].arn
      Condition = {
        ArnLike      = { "aws:SourceArn" = "arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:*" }
        StringEquals = { "aws:SourceAccount" = local.account_id }
      }
    }]
  })
}

# --- ElastiCache ---------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "redis_memory" {
  for_each            = toset(local.redis_node_ids)
  alarm_name          = "${local.alarm_prefix}-redis-memory-${each.key}"
  alarm_description   = "Redis node ${each.key} uses over ${local.thresholds.redis_memory_percent}% of its memory for data. With noeviction a full Redis refuses new tasks (dtqs answers 503): grow redis_node_type or drain the backlog."
  namespace           = local.alarm_metrics.redis_memory.namespace
  metric_name         = local.alarm_metrics.redis_memory.name
  dimensions          = { CacheClusterId = each.key }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.thresholds.redis_memory_percent
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "redis_replication_lag" {
  for_each            = toset(local.redis_node_ids)
  alarm_name          = "${local.alarm_prefix}-redis-replication-lag-${each.key}"
  alarm_description   = "Replica ${each.key} lags its primary by over ${local.thresholds.redis_replication_lag_seconds} s: a failover now would lose the tasks and acks of that window. The primary publishes no ReplicationLag (missing data is not breaching)."
  namespace           = local.alarm_metrics.redis_replication_lag.namespace
  metric_name         = local.alarm_metrics.redis_replication_lag.name
  dimensions          = { CacheClusterId = each.key }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.thresholds.redis_replication_lag_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- ECS ---------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "ecs_below_desired" {
  for_each            = local.below_desired_minutes
  alarm_name          = "${local.alarm_prefix}-${each.key}-below-desired"
  alarm_description   = "The ${each.key} service has run fewer tasks than desired for ${each.value} minutes (tasks failing to start or failing health checks), or Container Insights stopped reporting it."
  evaluation_periods  = each.value
  datapoints_to_alarm = each.value
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags

  metric_query {
    id          = "missing"
    expression  = "desired - running"
    label       = "Tasks the ${each.key} service is short of"
    return_data = true
  }

  metric_query {
    id = "desired"
    metric {
      namespace   = local.alarm_metrics.desired_tasks.namespace
      metric_name = local.alarm_metrics.desired_tasks.name
      dimensions  = { ClusterName = aws_ecs_cluster.this.name, ServiceName = local.ecs_service_names[each.key] }
      stat        = "Maximum"
      period      = 60
    }
  }

  metric_query {
    id = "running"
    metric {
      namespace   = local.alarm_metrics.running_tasks.namespace
      metric_name = local.alarm_metrics.running_tasks.name
      dimensions  = { ClusterName = aws_ecs_cluster.this.name, ServiceName = local.ecs_service_names[each.key] }
      stat        = "Maximum"
      period      = 60
    }
  }
}

# --- ALB -----------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "alb_target_5xx" {
  alarm_name          = "${local.alarm_prefix}-api-5xx"
  alarm_description   = "The API tasks answered over ${local.thresholds.alb_5xx_per_5_minutes} 5xx in 5 minutes. dtqs answers 503 (with Retry-After) while Redis is unusable: look at the Redis alarms and the api log group."
  namespace           = local.alarm_metrics.target_5xx.namespace
  metric_name         = local.alarm_metrics.target_5xx.name
  dimensions          = { LoadBalancer = aws_lb.api.arn_suffix }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.thresholds.alb_5xx_per_5_minutes
  treat_missing_data  = "notBreaching" # the ALB reports no count when there was none
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "alb_elb_5xx" {
  alarm_name          = "${local.alarm_prefix}-alb-5xx"
  alarm_description   = "The load balancer itself answered over ${local.thresholds.alb_5xx_per_5_minutes} 5xx in 5 minutes (502/503/504: no healthy API task, connections refused or timed out)."
  namespace           = local.alarm_metrics.elb_5xx.namespace
  metric_name         = local.alarm_metrics.elb_5xx.name
  dimensions          = { LoadBalancer = aws_lb.api.arn_suffix }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.thresholds.alb_5xx_per_5_minutes
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

# --- dtqs (EMF from the scheduler) -----------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "oldest_task_age" {
  for_each            = toset(var.queues)
  alarm_name          = "${local.alarm_prefix}-oldest-task-age-${each.key}"
  alarm_description   = "The oldest ready task of queue ${each.key} has waited over ${local.thresholds.oldest_task_age_seconds} s for 5 minutes: workers are too few, stuck, or at worker_max_count."
  namespace           = local.alarm_metrics.oldest_task_age.namespace
  metric_name         = local.alarm_metrics.oldest_task_age.name
  dimensions          = { (local.deployment_dimension) = var.name, (local.queue_dimension) = each.key }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.thresholds.oldest_task_age_seconds
  treat_missing_data  = "missing" # the metrics-missing alarm below covers silence
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "metrics_missing" {
  for_each            = toset(var.queues)
  alarm_name          = "${local.alarm_prefix}-metrics-missing-${each.key}"
  alarm_description   = "No dtqs metrics for queue ${each.key} (deployment ${var.name}) for 10 minutes: the schedulers are down or cannot reach Redis, or the manifest has no such queue. The worker autoscaling does nothing without them."
  namespace           = local.alarm_metrics.backlog.namespace
  metric_name         = local.alarm_metrics.backlog.name
  dimensions          = { (local.deployment_dimension) = var.name, (local.queue_dimension) = each.key }
  statistic           = "SampleCount"
  period              = 300
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = local.tags
}
