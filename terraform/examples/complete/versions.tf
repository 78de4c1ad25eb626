terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # Keep state in an encrypted remote backend: it holds the generated secrets.
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "dtqs/terraform.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = { project = var.name, managed-by = "terraform" }
  }
}
