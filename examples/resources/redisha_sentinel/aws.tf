provider "redisha" {
  region = "eu-west-1"
}

# One primary and two replicas over the subnets' three zones, three sentinels one per zone:
# the planner puts one data node and one sentinel on each instance.
resource "redisha_sentinel" "orders" {
  name              = "orders"
  replicas          = 2
  node_memory_mb    = 4096
  password          = var.password
  sentinel_password = var.sentinel_password

  aws {
    subnet_ids    = module.vpc.private_subnets
    instance_type = "r7g.large"
    ami           = var.ami
    allowed_cidrs = ["10.0.0.0/16"]
  }
}
