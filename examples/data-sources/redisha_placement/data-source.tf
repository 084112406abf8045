# 3 shards with one replica each over three zones of two racks each: where every node would run,
# and what losing a host, a zone or zone a (cut off by a network split) would do.
data "redisha_placement" "plan" {
  shards         = 3
  replicas       = 1
  node_memory_mb = 1024

  dynamic "zone" {
    for_each = toset(["eu-west-1a", "eu-west-1b", "eu-west-1c"])
    content {
      name = zone.key
      dynamic "host" {
        for_each = toset(["r1", "r2"])
        content {
          name      = "${zone.key}-${host.key}"
          rack      = host.key
          memory_mb = 4096
        }
      }
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
