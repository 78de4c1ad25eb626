# Worker autoscaling on what dtqs publishes: the scheduler (DTQS_CLOUDWATCH_EMF=1)
# prints CloudWatch Embedded Metric Format lines to its awslogs log group, from which
# CloudWatch extracts namespace "dtqs", dimension "Queue", metric "Backlog" (ready
# tasks). Target tracking holds backlog per running worker task near the target:
#
#   backlog_per_task = sum over var.queues of Backlog / RunningTaskCount(worker)
#
# Several schedulers emit the same figure, hence the Maximum statistic; a queue with no
# datapoint counts as 0.

locals {
  backlog_ids = [for i, q in var.queues : "backlog${i}"]
  backlog_sum = join(" + ", [for id in local.backlog_ids : "FILL(${id}, 0)"])
}

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this["worker"].name}"
  min_capacity       = var.worker_min_count
  max_capacity       = var.worker_max_count
  tags               = local.tags
}

resource "aws_appautoscaling_policy" "worker_backlog" {
  name               = "${var.name}-worker-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension
  resource_id        = aws_appautoscaling_target.worker.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.worker_backlog_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300 # scale-in stops tasks: each gets its grace, let them settle

    customized_metric_specification {
      dynamic "metrics" {
        for_each = var.queues
        content {
          id          = local.backlog_ids[metrics.key]
          label       = "dtqs Backlog of queue ${metrics.value}"
          return_data = false
          metric_stat {
            stat = "Maximum"
            metric {
              namespace   = local.metric_namespace
              metric_name = local.backlog_metric
              dimensions {
                name  = local.queue_dimension
                value = metrics.value
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
              value = aws_ecs_service.this["worker"].name
            }
          }
        }
      }

      metrics {
        id          = "backlog_per_task"
        label       = "dtqs backlog per running worker task"
        expression  = "(${local.backlog_sum}) / IF(tasks > 1, tasks, 1)"
        return_data = true
      }
    }
  }
}
