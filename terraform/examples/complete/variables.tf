# The example's inputs; the module documents and validates each one further.

variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "name" {
  description = "Name prefix of every resource."
  type        = string
  default     = "dtqs"
}

variable "image" {
  description = "Your dtqs image (dtqs.yaml and functions/ inside), pinned by tag or digest."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for HTTPS on the ALB; null needs allow_plain_http = true."
  type        = string
  default     = null
}

variable "allow_plain_http" {
  description = "Serve plain HTTP without a certificate (trials only: tokens in clear)."
  type        = bool
  default     = false
}

variable "vpc_id" {
  description = "Existing VPC, or null to create one."
  type        = string
  default     = null
}

variable "private_subnet_ids" {
  description = "With vpc_id: private subnets for tasks and Redis."
  type        = list(string)
  default     = []
}

variable "public_subnet_ids" {
  description = "With vpc_id: public subnets for the ALB."
  type        = list(string)
  default     = []
}

variable "queues" {
  description = "Queues the workers serve and scale on."
  type        = list(string)
  default     = ["default"]
}

variable "worker_grace_seconds" {
  description = "dtqs worker --grace in seconds (at most 110 on Fargate)."
  type        = number
  default     = 30
}

variable "worker_min_count" {
  description = "Fewest worker tasks."
  type        = number
  default     = 1
}

variable "worker_max_count" {
  description = "Most worker tasks."
  type        = number
  default     = 10
}

variable "worker_load_per_task" {
  description = "Autoscaling target: ready plus leased tasks per running worker task."
  type        = number
  default     = 100
}

variable "api_token_names" {
  description = "Environment variables the manifest's api.tokens read; one generated secret each."
  type        = list(string)
  default     = ["DTQS_CI_TOKEN", "DTQS_OPS_TOKEN"]
}

variable "alb_deletion_protection" {
  description = "Protect the ALB from deletion (set false before destroy)."
  type        = bool
  default     = true
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic for the alarms; null creates one (output alarm_topic_arn)."
  type        = string
  default     = null
}

variable "enable_waf" {
  description = "Attach a WAF web ACL with a per-IP rate limit to the ALB."
  type        = bool
  default     = false
}
