resource "redisha_cluster" "demo" {
  name           = "demo"
  shards         = 3
  replicas       = 1
  node_memory_mb = 256
  spread         = "zone"
  password       = var.password

  dynamic "zone" {
    for_each = ["zone-a", "zone-b", "zone-c"]
    content {
      name = zone.value
      host {
        name      = "${zone.value}-1"
        memory_mb = 1024
        max_nodes = 2
      }
      host {
        name      = "${zone.value}-2"
        memory_mb = 1024
        max_nodes = 2
      }
    }
  }

  local {
    data_dir = "${path.root}/.redisha/demo"
  }
}

output "endpoints" {
  value = redisha_cluster.demo.endpoints
}
