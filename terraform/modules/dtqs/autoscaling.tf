# Worker autoscaling on what dtqs publishes: the scheduler (DTQS_CLOUDWATCH_EMF=1,
# DTQS_DEPLOYMENT=var.name) prints CloudWatch Embedded Metric Format lines to its
# awslogs log group, from which CloudWatch extracts namespace "dtqs", dimensions
# Deployment and Queue, metrics Backlog (ready tasks) and InFlight (leased tasks).
# Target tracking holds the load per running worker task near the target:
#
#   load_per_task = sum over var.queues of (Backlog + InFlight) / RunningTaskCount(worker)
#
# - InFlight counts: with an empty backlog but busy workers the figure stays up, so
#   scale-in does not start while workers run tasks (and ECS task scale-in protection
#   keeps the busy ones when it does).
# - No FILL(…, 0): a minute without the scheduler's metrics (schedulers or Redis down,
#   a queue the scheduler does not know) has no datapoint, and target tracking does not
#   scale on missing data, where reading it as 0 would scale in.
# - The Deployment dimension: another deployment's series never drives this service.
# - Several schedulers emit the same figures, hence the Maximum statistic.
# - Target tracking watches the figure through CloudWatch alarms, which take at most 10
#   metrics each: two per queue plus RunningTaskCount allows 4 queues (variables.tf).

locals {
  load_series = flatten([for i, q in var.queues : [
    { id = "backlog${i}", queue = q, metric = local.backlog_metric },
    { id = "inflight${i}", queue = q, metric = local.in_flight_metric },
  ]])
  load_sum = join(" + ", [for m in local.load_series : m.id])
}

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.worker.name}"
  min_capacity       = var.worker_min_count
  max_capacity       = var.worker_max_count
  tags               = local.tags
}

resource "aws_appautoscaling_policy" "worker_load" {
  name               = "${var.name}-worker-load-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension
  resource_id        = aws_appautoscaling_target.worker.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.worker_load_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300 # scale-in stops idle tasks only (busy ones are protected)

    customized_metric_specification {
      dynamic "metrics" {
        for_each = local.load_series
        content {
          id          = metrics.value.id
          label       = "dtqs ${metrics.value.metric} of queue ${metrics.value.queue}"
          return_data = false
          metric_stat {
            stat = "Maximum"
            metric {
              namespace   = local.metric_namespace
              metric_name = metrics.value.metric
              dimensions {
                name  = local.deployment_dimension
                value = var.name
              }
              dimensions {
                name  = local.queue_dimension
                value = metrics.value.queue
              }
            }
          }
        }
      }

      metrics {
        id          = "tasks"
        label       = "Running worker tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = aws_ecs_cluster.this.name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.worker.name
            }
          }
        }
      }

      metrics {
        id          = "load_per_task"
        label       = "dtqs ready and leased tasks per running worker task"
        expression  = "(${local.load_sum}) / IF(tasks > 1, tasks, 1)"
        return_data = true
      }
    }
  }
}

# The policy was worker_backlog (on Backlog alone) before.
moved {
  from = aws_appautoscaling_policy.worker_backlog
  to   = aws_appautoscaling_policy.worker_load
}
