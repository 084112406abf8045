provider "redisha" {
  region = "eu-west-1"
}

resource "redisha_cluster" "main" {
  name           = "shop-sessions"
  shards         = 3
  replicas       = 1
  node_memory_mb = 4096
  password       = var.password

  aws {
    subnet_ids             = module.vpc.private_subnets
    instance_type          = "r7g.large"
    ami                    = var.ami
    max_nodes_per_instance = 1
    allowed_cidrs          = ["10.0.0.0/16"]
    data_volume {
      size_gb = 50
    }
  }
}
