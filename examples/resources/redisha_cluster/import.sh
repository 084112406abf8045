# Local driver: HOST:PORT of any node of the running cluster; its password, if it has one, in
# REDISHA_PASSWORD.
export REDISHA_PASSWORD="$TF_VAR_password"
terraform import redisha_cluster.demo 127.0.1.1:7000

# aws driver: the cluster's cluster_id, then one node's address.
terraform import redisha_cluster.main 0123456789abcdef@10.0.1.12:6379
