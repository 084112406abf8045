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

# Masters and their slot ranges.
output "masters" {
  value = {
    for n in data.redisha_placement.plan.nodes : n.name => n.slots if n.role == "master"
  }
}
