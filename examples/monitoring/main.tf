# A local cluster with a metrics exporter beside every node, the Prometheus target list and the
# per-zone reader endpoints as outputs. Write the targets where Prometheus' file_sd_configs
# reads them:
#   terraform output -raw prometheus_targets > /etc/prometheus/redisha/targets.json
# and watch the cluster live:
#   REDISHA_PASSWORD=... redisha status --state terraform.tfstate
terraform {
  required_providers {
    redisha = {
      source = "redisha/redisha"
    }
  }
}

provider "redisha" {}

variable "password" {
  type      = string
  sensitive = true
}

resource "redisha_cluster" "shop" {
  name           = "shop"
  shards         = 3
  replicas       = 1
  node_memory_mb = 256
  spread         = "zone"
  password       = var.password
  redis_config   = { maxmemory = "256mb" }

  dynamic "zone" {
    for_each = ["zone-a", "zone-b", "zone-c"]
    content {
      name = zone.value
      host {
        name      = "${zone.value}-1"
        memory_mb = 1024
        max_nodes = 2
      }
    }
  }

  # Exporters listen on each node's address at its port + 20000 (7000 -> 27000).
  metrics {}

  local {
    data_dir = "${path.root}/.redisha/shop"
  }
}

data "redisha_cluster_health" "shop" {
  endpoints     = redisha_cluster.shop.endpoints
  password      = var.password
  planned_nodes = redisha_cluster.shop.nodes
  depends_on    = [redisha_cluster.shop]
}

output "prometheus_targets" {
  value = redisha_cluster.shop.prometheus_targets
}

output "reader_endpoints" {
  value = redisha_cluster.shop.reader_endpoints
}

output "problems" {
  value = data.redisha_cluster_health.shop.problems
}
