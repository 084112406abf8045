# A Redis Cluster on EC2 across three availability zones.
#
# In: the private subnets of a VPC module (one or more per zone), an AMI (Debian/Ubuntu with
# cloud-init), an instance type and a password. Out: 3 shards with 1 replica each, placed so that
# no shard shares a zone with its own replica and losing any one zone keeps a master majority.
#
# The planner decides how many instances each zone needs: every instance is a host with the
# instance type's memory, running up to max_nodes_per_instance nodes of node_memory_mb each.
# With the values below (one node per instance) that is 6 instances, 2 per zone.
#
# Dry run first, without creating anything:
#   terraform plan -var-file=prod.tfvars
# shows redisha_aws_topology's zones and redisha_placement's what-if report for the same shape.
#
# Credentials come from the standard AWS chain (environment, profile, SSO, instance role).

terraform {
  required_providers {
    redisha = {
      source = "redisha/redisha"
    }
  }
}

variable "region" {
  description = "AWS region of the VPC, e.g. eu-west-1."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the cluster, e.g. module.vpc.private_subnets; their zones are the cluster's zones."
  type        = list(string)
}

variable "vpc_id" {
  description = "The VPC of the subnets, for the dry-run topology (e.g. module.vpc.vpc_id)."
  type        = string
}

variable "ami" {
  description = "AMI id of a Debian or Ubuntu image with cloud-init."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type; its memory is the capacity the planner fills."
  type        = string
  default     = "r7g.large"
}

variable "password" {
  description = "Password of the cluster's default user. Stored in state and in the instances' user data: see docs/resources/cluster.md."
  type        = string
  sensitive   = true
}

provider "redisha" {
  region = var.region
  # endpoint = "https://vpce-0123-ec2.eu-west-1.vpce.amazonaws.com"  # a VPC interface endpoint
  # assume_role {
  #   role_arn = "arn:aws:iam::123456789012:role/redisha"
  # }
}

locals {
  shards         = 3
  replicas       = 1
  node_memory_mb = 4096
}

# --- Dry run: the VPC's zones and subnets, and where the planner would put the nodes. ---

data "redisha_aws_topology" "vpc" {
  vpc_id = var.vpc_id
}

# The same shape on one candidate host per node and zone (16 GiB each, one node per host), as
# the aws driver would offer them. Reads only.
data "redisha_placement" "dry_run" {
  shards         = local.shards
  replicas       = local.replicas
  node_memory_mb = local.node_memory_mb

  dynamic "zone" {
    for_each = data.redisha_aws_topology.vpc.zone_names
    content {
      name = zone.value
      dynamic "host" {
        for_each = range(1, 3)
        content {
          name      = "${zone.value}-${host.value}"
          memory_mb = 16384
          max_nodes = 1
        }
      }
    }
  }
}

output "zones" {
  description = "The zones the VPC's subnets are in."
  value       = data.redisha_aws_topology.vpc.zone_names
}

output "dry_run_report" {
  description = "The planner's what-if report for the dry run (markdown)."
  value       = data.redisha_placement.dry_run.report
}

# --- The cluster. ---

resource "redisha_cluster" "main" {
  name           = "shop-sessions"
  shards         = local.shards
  replicas       = local.replicas
  node_memory_mb = local.node_memory_mb
  spread         = "zone"
  password       = var.password

  redis_config = {
    "maxmemory-policy" = "allkeys-lru"
  }

  aws {
    subnet_ids    = var.subnet_ids
    instance_type = var.instance_type
    ami           = var.ami
    # One node per instance: an instance failure loses one node only.
    max_nodes_per_instance = 1
    # Who may reach the Redis ports besides the cluster itself (your application subnets).
    allowed_cidrs = ["10.0.0.0/16"]
    tags = {
      team = "platform"
    }
    data_volume {
      size_gb   = 50
      encrypted = true
    }
  }

  timeouts {
    create = "20m"
    update = "30m"
    delete = "15m"
  }
}

output "endpoints" {
  description = "host:port of every node, for cluster-aware clients."
  value       = redisha_cluster.main.endpoints
}

output "nodes" {
  description = "Every node with its role, zone and instance host."
  value       = redisha_cluster.main.nodes
}
