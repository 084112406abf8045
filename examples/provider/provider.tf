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
}

output "report" {
  value = data.redisha_placement.plan.report
}
