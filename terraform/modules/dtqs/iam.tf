# Two roles per task definition, both shared by the three services:
# - the execution role (used by ECS to start a task): pull the image, write the three
#   log groups, read exactly the secrets injected into the containers;
# - the task role (the dtqs processes' own identity): only ECS task scale-in protection
#   of this cluster's tasks, which the worker sets through the ECS agent (the agent
#   calls UpdateTaskProtection with the task role's credentials). Attach what your
#   handlers need to the role named in the task_role_name output.

locals {
  # An ECR image lets us name its repository; any other registry needs no ECR rights.
  ecr_match = regex("^(?:([0-9]{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/([^:@]+))?", var.image)
  ecr_repository_arn = (local.ecr_match[0] == null ? null
  : "arn:${local.partition}:ecr:${local.ecr_match[1]}:${local.ecr_match[0]}:repository/${local.ecr_match[2]}")

  ecs_assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
    }]
  })
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-ecs-exec-"
  description        = "dtqs ${var.name}: ECS starts the tasks (image, logs, secrets)"
  assume_role_policy = local.ecs_assume_role_policy
  tags               = local.tags
}

resource "aws_iam_role_policy" "execution" {
  name = "start-dtqs-tasks"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [for statement in [
        {
          Sid      = "EcrLogin" # GetAuthorizationToken takes no resource
          Effect   = "Allow"
          Action   = ["ecr:GetAuthorizationToken"]
          Resource = "*"
        },
        {
          Sid      = "PullTheImage"
          Effect   = "Allow"
          Action   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
          Resource = [local.ecr_repository_arn]
        },
      ] : statement if local.ecr_repository_arn != null],
      [
        {
          Sid      = "WriteServiceLogs"
          Effect   = "Allow"
          Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
          Resource = [for g in aws_cloudwatch_log_group.service : "${g.arn}:*"]
        },
        {
          Sid      = "ReadInjectedSecrets"
          Effect   = "Allow"
          Action   = ["secretsmanager:GetSecretValue"]
          Resource = local.readable_secret_arns
        },
        {
          Sid      = "DecryptInjectedSecrets"
          Effect   = "Allow"
          Action   = ["kms:Decrypt"]
          Resource = [local.kms_key_arn]
          Condition = {
            StringEquals = { "kms:ViaService" = "secretsmanager.${local.region}.amazonaws.com" }
          }
        },
      ],
    )
  })
}

resource "aws_iam_role" "task" {
  name_prefix        = "${var.name}-dtqs-task-"
  description        = "dtqs ${var.name}: identity of the dtqs processes; only task scale-in protection by default"
  assume_role_policy = local.ecs_assume_role_policy
  tags               = local.tags
}

# A busy worker PUTs $ECS_AGENT_URI/task-protection/v1/state; the ECS agent turns that
# into ecs:UpdateTaskProtection (and a GET into ecs:GetTaskProtection) signed with this
# role. Without these the agent answers 403 and busy workers are not protected.
resource "aws_iam_role_policy" "task_protection" {
  name = "ecs-task-scale-in-protection"
  role = aws_iam_role.task.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "ProtectOwnClusterTasks"
      Effect   = "Allow"
      Action   = ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"]
      Resource = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:task/${aws_ecs_cluster.this.name}/*"]
    }]
  })
}
