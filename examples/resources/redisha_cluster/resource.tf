variable "password" {
  type      = string
  sensitive = true
}

# Three zones of two hosts each, on this machine: the local driver.
resource "redisha_cluster" "demo" {
  name           = "demo"
  shards         = 3
  replicas       = 1
  node_memory_mb = 256
  password       = var.password

  dynamic "zone" {
    for_each = toset(["zone-a", "zone-b", "zone-c"])
    content {
      name = zone.key
      dynamic "host" {
        for_each = toset(["1", "2"])
        content {
          name      = "${zone.key}-${host.key}"
          memory_mb = 1024
          max_nodes = 2
        }
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
