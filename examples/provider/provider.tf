terraform {
  required_providers {
    redisha = {
      source  = "redisha/redisha"
      version = "~> 0.1"
    }
  }
}

# Nothing to set for the local driver and the planner data sources; the aws driver needs a
# region (here or in AWS_REGION).
provider "redisha" {
  region = "eu-west-1"
}
