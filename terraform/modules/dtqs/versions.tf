terraform {
  # >= 1.6 for `terraform test`; mock_provider in the tests needs >= 1.7 (CI has 1.11).
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
