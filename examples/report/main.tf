# A dry-run placement report: 3 shards with one replica each over three zones.
# `terraform apply` prints the report; nothing is created.

terraform {
  required_providers {
    redisha = {
      source  = "redisha/redisha"
      version = "~> 0.1"
    }
  }
}

provider "redisha" {}

data "redisha_placement" "plan" {
  shards         = 3
  replicas       = 1
  node_memory_mb = 1024
  spread         = "zone"

  zone {
    name = "eu-west-1a"
    host {
      name      = "a1"
      memory_mb = 4096
      max_nodes = 2
    }
  }
  zone {
    name = "eu-west-1b"
    host {
      name      = "b1"
      memory_mb = 4096
      max_nodes = 2
    }
  }
  zone {
    name = "eu-west-1c"
    host {
      name      = "c1"
      memory_mb = 4096
      max_nodes = 2
    }
  }

  partition {
    name = "a-cut-off"
    side = ["eu-west-1a"]
  }
}

output "report" {
  value = data.redisha_placement.plan.report
}

output "summary" {
  value = data.redisha_placement.plan.summary
}

output "survives_any_zone_loss" {
  value = data.redisha_placement.plan.survives_any_zone_loss
}

output "nodes" {
  value = data.redisha_placement.plan.nodes
}
