# A Redis Cluster on this machine: 3 zones of 2 hosts each (loopback addresses 127.0.Z.H),
# 3 shards with 1 replica each, no shard sharing a zone with its own replica.
terraform {
  required_providers {
    redisha = {
      source = "redisha/redisha"
    }
  }
}

provider "redisha" {}

variable "password" {
  description = "Password of the cluster's default user."
  type        = string
  sensitive   = true
}

variable "shards" {
  type    = number
  default = 3
}

variable "replicas" {
  type    = number
  default = 1
}

variable "base_port" {
  type    = number
  default = 7000
}

variable "loopback_octet" {
  description = "Second octet of the host addresses 127.O.Z.H; give parallel clusters different values."
  type        = number
  default     = 0
}

variable "redis_server" {
  description = "The server binary (Redis 6.2+ or Valkey 7.2+). Change it to roll the cluster onto that engine in place."
  type        = string
  default     = "redis-server"
}

variable "redis_config" {
  type    = map(string)
  default = {}
}

resource "redisha_cluster" "demo" {
  name           = "demo"
  shards         = var.shards
  replicas       = var.replicas
  node_memory_mb = 256
  spread         = "zone"
  password       = var.password
  redis_config   = var.redis_config

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
    data_dir       = "${path.root}/.redisha/demo"
    base_port      = var.base_port
    loopback_octet = var.loopback_octet
    redis_server   = var.redis_server
  }
}

data "redisha_cluster_health" "demo" {
  endpoints = redisha_cluster.demo.endpoints
  password  = var.password

  # Read after the cluster is applied, not during plan (its endpoints are known at plan time).
  depends_on = [redisha_cluster.demo]
}

output "placement_report" {
  value = redisha_cluster.demo.placement_report
}

output "endpoints" {
  value = redisha_cluster.demo.endpoints
}

output "nodes" {
  value = redisha_cluster.demo.nodes
}

output "healthy" {
  value = data.redisha_cluster_health.demo.healthy
}
