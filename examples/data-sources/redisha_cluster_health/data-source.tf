data "redisha_cluster_health" "demo" {
  endpoints = redisha_cluster.demo.endpoints
  password  = var.password

  # Read after the cluster is applied, not during plan (its endpoints are known at plan time).
  depends_on = [redisha_cluster.demo]
}

output "healthy" {
  value = data.redisha_cluster_health.demo.healthy
}
