# Inputs of the dtqs module. Cross-variable rules (e.g. "an existing VPC needs its
# subnets") live in preconditions in main.tf, since validation blocks may only look at
# their own variable on terraform < 1.9.

variable "name" {
  description = "Name prefix of every resource (ALB, ECS cluster, replication group, secrets, log groups)."
  type        = string
  default     = "dtqs"

  validation {
    # The ALB and target-group names (name + "-api") are limited to 32 characters and
    # the ElastiCache replication group id to lowercase letters, digits and hyphens.
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "name must be 2-20 characters: lowercase letters, digits and single hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}

# --- network -----------------------------------------------------------------------

variable "vpc_id" {
  description = "An existing VPC to deploy into. null (the default) creates a new VPC with public and private subnets and NAT gateways."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0, or be null to create a VPC."
  }
}

variable "private_subnet_ids" {
  description = "With vpc_id: private subnets (at least two, in different AZs) for the ECS tasks and the replication group. They need a route to the internet (NAT) or VPC endpoints for ECR, Secrets Manager and CloudWatch Logs."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", id))])
    error_message = "private_subnet_ids must be subnet ids (subnet-...)."
  }
}

variable "public_subnet_ids" {
  description = "With vpc_id: subnets (at least two, in different AZs) for the load balancer; public ones for an internet-facing ALB, private ones with alb_internal = true."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.public_subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", id))])
    error_message = "public_subnet_ids must be subnet ids (subnet-...)."
  }
}

variable "vpc_cidr" {
  description = "Without vpc_id: the CIDR block of the new VPC; it is split into one public and one private subnet per AZ."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(tonumber(split("/", var.vpc_cidr)[1]) <= 20, false)
    error_message = "vpc_cidr must be an IPv4 CIDR block of /20 or larger, e.g. 10.40.0.0/16."
  }
}

variable "az_count" {
  description = "Without vpc_id: how many availability zones the new VPC spans (Multi-AZ needs at least two)."
  type        = number
  default     = 2

  validation {
    condition     = contains([2, 3], var.az_count)
    error_message = "az_count must be 2 or 3."
  }
}

variable "availability_zones" {
  description = "Without vpc_id: the zones of the new VPC, e.g. [\"eu-west-1a\", \"eu-west-1b\"] (overrides az_count). Empty: the first az_count zones of the region by name."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || (length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3 && length(distinct(var.availability_zones)) == length(var.availability_zones))
    error_message = "availability_zones must be empty or list 2 or 3 distinct zone names."
  }
}

variable "single_nat_gateway" {
  description = "Without vpc_id: one NAT gateway for all AZs (cheaper, but outbound traffic stops if its AZ fails) instead of one per AZ."
  type        = bool
  default     = false
}

# --- image and commands ------------------------------------------------------------

variable "image" {
  description = "The one container image of api, worker and scheduler: the dtqs image with your dtqs.yaml and functions/ baked in, pinned by tag or digest (e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1.4.2)."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image must name a tag or digest other than :latest (e.g. repo/app:1.4.2 or repo/app@sha256:...), so every task runs the same code."
  }
}

variable "config_path" {
  description = "Path of the manifest inside the image, passed as DTQS_CONFIG. null: the image's working directory's dtqs.yaml."
  type        = string
  default     = null

  validation {
    condition     = var.config_path == null || can(regex("^/[^\\s]+\\.ya?ml$", var.config_path))
    error_message = "config_path must be an absolute path to a .yaml or .yml file, or null."
  }
}

variable "environment" {
  description = "Extra plain environment variables for all three services. Secrets do not belong here: Redis URL and API tokens are injected from Secrets Manager."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.environment) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", k)) && !contains(["DTQS_REDIS_URL", "DTQS_CONFIG", "DTQS_CLOUDWATCH_EMF", "DTQS_DEPLOYMENT", "DTQS_SCALE_IN_PROTECTION_MINUTES"], k)])
    error_message = "environment keys must be variable names and must not set DTQS_REDIS_URL (a secret), DTQS_CONFIG (use config_path), DTQS_CLOUDWATCH_EMF or DTQS_DEPLOYMENT (set on the scheduler from name), or DTQS_SCALE_IN_PROTECTION_MINUTES (use worker_scale_in_protection_minutes)."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the Fargate tasks; must match the image."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "readonly_root_filesystem" {
  description = "Run containers with a read-only root filesystem (a writable /tmp volume is mounted). Turn off only if your handlers write elsewhere."
  type        = bool
  default     = true
}

variable "task_sizes" {
  description = "Fargate CPU units and memory (MiB) per task of each service; must be a valid Fargate combination."
  type = object({
    api       = object({ cpu = number, memory = number })
    worker    = object({ cpu = number, memory = number })
    scheduler = object({ cpu = number, memory = number })
  })
  default = {
    api       = { cpu = 512, memory = 1024 }
    worker    = { cpu = 1024, memory = 2048 }
    scheduler = { cpu = 256, memory = 512 }
  }

  validation {
    condition = alltrue([
      for s in values(var.task_sizes) : contains([256, 512, 1024, 2048, 4096, 8192, 16384], s.cpu)
      && s.memory >= 512 && s.memory <= 122880 && s.memory >= s.cpu && s.memory <= s.cpu * 8
    ])
    error_message = "Each cpu must be one of 256, 512, 1024, 2048, 4096, 8192, 16384 and memory between cpu and 8 x cpu MiB (Fargate's combinations)."
  }
}

# --- api ---------------------------------------------------------------------------

variable "api_desired_count" {
  description = "Number of API tasks behind the load balancer."
  type        = number
  default     = 2

  validation {
    condition     = var.api_desired_count >= 1 && var.api_desired_count <= 100 && floor(var.api_desired_count) == var.api_desired_count
    error_message = "api_desired_count must be a whole number from 1 to 100."
  }
}

variable "api_token_names" {
  description = "Environment variables your manifest's api.tokens read (e.g. token: \"$${DTQS_CI_TOKEN}\"). The module generates one Secrets Manager secret per name and injects it into every service, since every dtqs command expands the whole manifest."
  type        = list(string)
  default     = ["DTQS_CI_TOKEN", "DTQS_OPS_TOKEN"]

  validation {
    condition     = alltrue([for n in var.api_token_names : can(regex("^[A-Z_][A-Z0-9_]{0,63}$", n)) && n != "DTQS_REDIS_URL"]) && length(distinct(var.api_token_names)) == length(var.api_token_names)
    error_message = "api_token_names must be distinct upper-case environment variable names other than DTQS_REDIS_URL."
  }
}

variable "certificate_arn" {
  description = "ACM certificate for the ALB's HTTPS listener; port 80 then redirects to 443. null is refused unless allow_plain_http = true: the API would carry Bearer tokens in clear."
  type        = string
  default     = null

  validation {
    condition     = var.certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/.+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN, or null."
  }
}

variable "allow_plain_http" {
  description = "Without certificate_arn, serve the API in plain HTTP on port 80. Off by default: Bearer tokens and payloads would cross the network in clear. For trials only."
  type        = bool
  default     = false
}

variable "api_drain_seconds" {
  description = "dtqs api --drain: on SIGTERM the API stops accepting connections, lets in-flight requests finish and answers waiting long-polls, within this many seconds. The API container's stopTimeout is set above it (Fargate allows at most 120 s)."
  type        = number
  default     = 20

  validation {
    condition     = var.api_drain_seconds >= 1 && var.api_drain_seconds <= 110 && floor(var.api_drain_seconds) == var.api_drain_seconds
    error_message = "api_drain_seconds must be a whole number from 1 to 110 (Fargate's stopTimeout is at most 120 s and must exceed the drain)."
  }
}

variable "alb_idle_timeout_seconds" {
  description = "The ALB's idle timeout: it closes a connection on which nothing moved for this long. Must stay above the API's longest long-poll (api.max_wait, 30 s by default) and below api_idle_timeout_seconds."
  type        = number
  default     = 60

  validation {
    condition     = var.alb_idle_timeout_seconds >= 35 && var.alb_idle_timeout_seconds <= 4000 && floor(var.alb_idle_timeout_seconds) == var.alb_idle_timeout_seconds
    error_message = "alb_idle_timeout_seconds must be a whole number from 35 (above the API's 30 s long-polls) to 4000 (the ALB's maximum)."
  }
}

variable "api_idle_timeout_seconds" {
  description = "dtqs api --idle-timeout: waitress closes an idle keep-alive connection after this many seconds. It must exceed alb_idle_timeout_seconds, so the ALB, not waitress, closes idle connections; otherwise the ALB can send a request on a connection waitress is closing and answer 502."
  type        = number
  default     = 75

  validation {
    condition     = var.api_idle_timeout_seconds >= 1 && var.api_idle_timeout_seconds <= 4100 && floor(var.api_idle_timeout_seconds) == var.api_idle_timeout_seconds
    error_message = "api_idle_timeout_seconds must be a whole number from 1 to 4100."
  }
}

variable "metrics_scraper_security_group_ids" {
  description = "Security groups (e.g. of Prometheus or an ADOT collector in the VPC) allowed to reach the API tasks on 8080 to scrape /metrics. The ALB never serves /metrics."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.metrics_scraper_security_group_ids : can(regex("^sg-[0-9a-f]{8,17}$", id))])
    error_message = "metrics_scraper_security_group_ids must be security group ids (sg-...)."
  }
}

variable "metrics_scraper_cidrs" {
  description = "IPv4 CIDR blocks (inside the VPC or peered networks) allowed to reach the API tasks on 8080 to scrape /metrics."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.metrics_scraper_cidrs : can(cidrhost(c, 0)) && strcontains(c, "/") && c != "0.0.0.0/0"])
    error_message = "metrics_scraper_cidrs must be IPv4 CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "enable_waf" {
  description = "Attach an AWS WAF web ACL to the ALB: a rate-based rule per client IP (waf_rate_limit) and AWS's known-bad-inputs rule group, with its logs in CloudWatch. Off by default; see terraform/README.md."
  type        = bool
  default     = false
}

variable "waf_rate_limit" {
  description = "With enable_waf: requests one client IP may send in any 5 minutes before WAF blocks it (until its rate falls again). Size it above your busiest producer behind one NAT address."
  type        = number
  default     = 10000

  validation {
    condition     = var.waf_rate_limit >= 100 && var.waf_rate_limit <= 2000000000 && floor(var.waf_rate_limit) == var.waf_rate_limit
    error_message = "waf_rate_limit must be a whole number from 100 to 2,000,000,000 requests per 5 minutes."
  }
}

variable "alb_internal" {
  description = "Make the load balancer internal (reachable only from the VPC and peered networks)."
  type        = bool
  default     = false
}

variable "alb_ingress_cidrs" {
  description = "IPv4 CIDR blocks allowed to reach the load balancer."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.alb_ingress_cidrs) > 0 && alltrue([for c in var.alb_ingress_cidrs : can(cidrhost(c, 0)) && strcontains(c, "/")])
    error_message = "alb_ingress_cidrs must be a non-empty list of IPv4 CIDR blocks."
  }
}

variable "alb_deletion_protection" {
  description = "Protect the load balancer from deletion (set false before terraform destroy)."
  type        = bool
  default     = true
}

variable "alb_access_logs_bucket" {
  description = "S3 bucket (with the ELB log-delivery bucket policy) for ALB access logs; null disables them."
  type        = string
  default     = null

  validation {
    condition     = var.alb_access_logs_bucket == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.alb_access_logs_bucket))
    error_message = "alb_access_logs_bucket must be an S3 bucket name, or null."
  }
}

# --- workers and autoscaling -------------------------------------------------------

variable "queues" {
  description = "Queues the worker service serves (dtqs worker --queues) and whose Backlog and InFlight metrics drive its autoscaling. Names as in dtqs.yaml. At most 4: target tracking watches its metric through CloudWatch alarms, which take at most 10 metrics (two per queue, plus the running task count)."
  type        = list(string)
  default     = ["default"]

  validation {
    condition     = length(var.queues) >= 1 && length(var.queues) <= 4 && length(distinct(var.queues)) == length(var.queues) && alltrue([for q in var.queues : can(regex("^[a-z][a-z0-9_-]{0,63}$", q))])
    error_message = "queues must list 1 to 4 distinct queue names matching ^[a-z][a-z0-9_-]*$ (dtqs's queue-name rule); 4 because the scaling metric's alarm takes at most 10 CloudWatch metrics (Backlog and InFlight per queue, plus RunningTaskCount)."
  }
}

variable "worker_grace_seconds" {
  description = "dtqs worker --grace: seconds running tasks get to finish after SIGTERM; the rest are released to their queues and run again on another worker. The container's stopTimeout is set above it (Fargate allows at most 120 s), so it must leave room."
  type        = number
  default     = 30

  validation {
    condition     = var.worker_grace_seconds >= 1 && var.worker_grace_seconds <= 110 && floor(var.worker_grace_seconds) == var.worker_grace_seconds
    error_message = "worker_grace_seconds must be a whole number from 1 to 110 (Fargate's stopTimeout is at most 120 s and must exceed the grace)."
  }
}

variable "worker_stop_timeout_seconds" {
  description = "stopTimeout of the worker container: seconds between SIGTERM and SIGKILL. null: worker_grace_seconds + 15, at most 120. Must leave at least 5 s after the grace for the worker to release unfinished tasks."
  type        = number
  default     = null

  validation {
    condition     = var.worker_stop_timeout_seconds == null || try(var.worker_stop_timeout_seconds >= 2 && var.worker_stop_timeout_seconds <= 120 && floor(var.worker_stop_timeout_seconds) == var.worker_stop_timeout_seconds, false)
    error_message = "worker_stop_timeout_seconds must be a whole number from 2 to 120 (Fargate's maximum), or null."
  }
}

variable "worker_scale_in_protection_minutes" {
  description = "DTQS_SCALE_IN_PROTECTION_MINUTES: while a worker task holds leased tasks it asks ECS to protect it from scale-in and deployments for this long, renewed while it stays busy, released when it is idle."
  type        = number
  default     = 60

  validation {
    condition     = var.worker_scale_in_protection_minutes >= 1 && var.worker_scale_in_protection_minutes <= 2880 && floor(var.worker_scale_in_protection_minutes) == var.worker_scale_in_protection_minutes
    error_message = "worker_scale_in_protection_minutes must be a whole number from 1 to 2880 (ECS allows 48 hours at most)."
  }
}

variable "worker_processes" {
  description = "dtqs worker --processes per task; null lets dtqs use the CPU count the task sees."
  type        = number
  default     = null

  validation {
    condition     = var.worker_processes == null || try(var.worker_processes >= 1 && var.worker_processes <= 64, false)
    error_message = "worker_processes must be from 1 to 64, or null."
  }
}

variable "worker_min_count" {
  description = "Fewest worker tasks. At least 1: the scaling metric is backlog per running task."
  type        = number
  default     = 1

  validation {
    condition     = var.worker_min_count >= 1 && floor(var.worker_min_count) == var.worker_min_count
    error_message = "worker_min_count must be a whole number of at least 1."
  }
}

variable "worker_max_count" {
  description = "Most worker tasks the autoscaler may run."
  type        = number
  default     = 10

  validation {
    condition     = var.worker_max_count >= 1 && var.worker_max_count <= 1000 && floor(var.worker_max_count) == var.worker_max_count
    error_message = "worker_max_count must be a whole number from 1 to 1000."
  }
}

variable "worker_load_per_task" {
  description = "Target of the worker autoscaling: dtqs Backlog (ready) plus InFlight (leased) tasks, summed over the queues, per running worker task. Set it to the slots of one worker task (processes x concurrency) plus the backlog per task you accept waiting."
  type        = number
  default     = 100

  validation {
    condition     = var.worker_load_per_task > 0
    error_message = "worker_load_per_task must be positive."
  }
}

variable "scheduler_count" {
  description = "Number of scheduler tasks; two or three for availability (each tick still fires once)."
  type        = number
  default     = 2

  validation {
    condition     = var.scheduler_count >= 1 && var.scheduler_count <= 3 && floor(var.scheduler_count) == var.scheduler_count
    error_message = "scheduler_count must be 1, 2 or 3."
  }
}

# --- Redis / Valkey ----------------------------------------------------------------

variable "redis_engine" {
  description = "ElastiCache engine: valkey or redis."
  type        = string
  default     = "valkey"

  validation {
    condition     = contains(["valkey", "redis"], var.redis_engine)
    error_message = "redis_engine must be valkey or redis."
  }
}

variable "redis_engine_version" {
  description = "Engine version, e.g. 8.0 or 7.2 for valkey, 7.1 for redis."
  type        = string
  default     = "8.0"

  validation {
    condition     = can(regex("^[6-9]\\.[0-9x]+$", var.redis_engine_version))
    error_message = "redis_engine_version must be 6.x or later, e.g. 8.0."
  }
}

variable "redis_parameter_group_family" {
  description = "Parameter group family matching engine and version: valkey8, valkey7, redis7."
  type        = string
  default     = "valkey8"

  validation {
    condition     = can(regex("^(valkey[7-9]|redis[6-7](\\.x)?)$", var.redis_parameter_group_family))
    error_message = "redis_parameter_group_family must be e.g. valkey8, valkey7, redis7 or redis6.x."
  }
}

variable "redis_node_type" {
  description = "ElastiCache node type. Size memory for the backlog: with noeviction, a full Redis refuses new tasks instead of dropping old ones."
  type        = string
  default     = "cache.t4g.medium"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.redis_node_type))
    error_message = "redis_node_type must be an ElastiCache node type such as cache.m7g.large."
  }
}

variable "redis_node_count" {
  description = "Nodes in the replication group: one primary plus replicas in other AZs (Multi-AZ with automatic failover needs at least 2)."
  type        = number
  default     = 2

  validation {
    condition     = var.redis_node_count >= 2 && var.redis_node_count <= 6 && floor(var.redis_node_count) == var.redis_node_count
    error_message = "redis_node_count must be from 2 to 6."
  }
}

variable "redis_snapshot_retention_days" {
  description = "Days of daily snapshots kept (0 turns daily backups off; the final snapshot on destroy is taken regardless)."
  type        = number
  default     = 7

  validation {
    condition     = var.redis_snapshot_retention_days >= 0 && var.redis_snapshot_retention_days <= 35
    error_message = "redis_snapshot_retention_days must be from 0 to 35."
  }
}

variable "redis_snapshot_window" {
  description = "Daily UTC window of the automatic snapshot (hh:mm-hh:mm, at least 60 minutes); it must not overlap the maintenance window (redis_maintenance_window)."
  type        = string
  default     = "03:00-04:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$", var.redis_snapshot_window))
    error_message = "redis_snapshot_window must look like 03:00-04:00 (UTC)."
  }
}

variable "redis_maintenance_window" {
  description = "Weekly UTC maintenance window of the replication group (ddd:hh:mm-ddd:hh:mm). Failovers for maintenance happen in it: dtqs answers 503 with Retry-After meanwhile."
  type        = string
  default     = "sun:05:00-sun:06:00"

  validation {
    condition     = can(regex("^(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$", var.redis_maintenance_window))
    error_message = "redis_maintenance_window must look like sun:05:00-sun:06:00 (UTC)."
  }
}

variable "redis_auth_token_secret_arn" {
  description = "An existing Secrets Manager secret whose plain-text value is the Redis AUTH token (16-128 printable characters, none of @ \" / or space). null: the module generates one."
  type        = string
  default     = null

  validation {
    condition     = var.redis_auth_token_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.redis_auth_token_secret_arn))
    error_message = "redis_auth_token_secret_arn must be a Secrets Manager secret ARN, or null."
  }
}

# --- encryption, secrets and logs --------------------------------------------------

variable "kms_key_arn" {
  description = "A customer-managed KMS key for secrets, logs and Redis at rest. null: the module creates one with rotation. A key of your own must let CloudWatch Logs use it for log groups named /dtqs/<name>/*."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN, or null."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can be restored (0 deletes at once)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or from 7 to 30."
  }
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups (services, Redis engine and slow logs, WAF, VPC flow logs)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

# --- alarms ------------------------------------------------------------------------

variable "alarm_sns_topic_arn" {
  description = "SNS topic every CloudWatch alarm of the module notifies (on ALARM and on OK). null: the module creates a KMS-encrypted topic (alarm_topic_arn output); subscribe to it."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_sns_topic_arn == null || can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$", var.alarm_sns_topic_arn))
    error_message = "alarm_sns_topic_arn must be an SNS topic ARN, or null."
  }
}

variable "alarm_thresholds" {
  description = "Thresholds of the CloudWatch alarms; any attribute left out keeps its default."
  type = object({
    redis_memory_percent          = optional(number, 80)  # DatabaseMemoryUsagePercentage of any node
    redis_replication_lag_seconds = optional(number, 30)  # ReplicationLag of any replica
    oldest_task_age_seconds       = optional(number, 900) # dtqs OldestTaskAgeSeconds of any queue
    alb_5xx_per_5_minutes         = optional(number, 10)  # 5xx answers (targets, and the ALB itself)
  })
  default = {}

  validation {
    condition = (var.alarm_thresholds.redis_memory_percent > 0 && var.alarm_thresholds.redis_memory_percent < 100
      && var.alarm_thresholds.redis_replication_lag_seconds > 0
      && var.alarm_thresholds.oldest_task_age_seconds > 0
    && var.alarm_thresholds.alb_5xx_per_5_minutes >= 0)
    error_message = "alarm_thresholds: redis_memory_percent must be between 0 and 100, the others positive (alb_5xx_per_5_minutes may be 0)."
  }
}
