variable "password" {
  type      = string
  sensitive = true
}

# One primary and two replicas over three zones, three sentinels one per zone: losing any one
# zone is failed over by Sentinel with a replica left to keep accepting writes.
resource "redisha_sentinel" "orders" {
  name           = "orders"
  replicas       = 2
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
        }
      }
    }
  }

  sentinel {
    count         = 3
    down_after_ms = 5000
  }

  local {
    data_dir = "${path.root}/.redisha/orders"
  }
}

# What a Sentinel-aware client needs: the sentinels and the master name. It logs in to the
# sentinels with `sentinel_password` (here unset, so `password`) and to the primary with `password`.
output "sentinels" {
  value = redisha_sentinel.orders.sentinel_addresses
}

output "master_name" {
  value = redisha_sentinel.orders.master_name
}
