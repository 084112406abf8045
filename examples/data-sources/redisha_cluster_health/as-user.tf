data "redisha_cluster_health" "as_monitor" {
  endpoints = redisha_cluster.demo.endpoints
  # A user block of the cluster with `rules = "+info +cluster|nodes +cluster|info +config|get"`.
  user     = "monitor"
  password = var.monitor_password

  depends_on = [redisha_cluster.demo]
}
