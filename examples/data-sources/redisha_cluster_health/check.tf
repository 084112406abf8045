check "cluster_healthy" {
  assert {
    condition     = data.redisha_cluster_health.demo.healthy
    error_message = "The Redis Cluster is not healthy."
  }
}
