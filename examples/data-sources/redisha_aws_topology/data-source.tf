provider "redisha" {
  region = "eu-west-1"
}

data "redisha_aws_topology" "main" {
  vpc_id = "vpc-0a1b2c3d4e5f60789"
}

# One subnet per zone for the cluster.
locals {
  subnet_ids = [for z in data.redisha_aws_topology.main.zones : z.subnet_ids[0]]
}

output "zones" {
  value = data.redisha_aws_topology.main.zone_names
}
