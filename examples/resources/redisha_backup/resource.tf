# A backup of the cluster each day (a new `triggers` value takes a new one), keeping 7.
resource "redisha_backup" "daily" {
  cluster_id  = redisha_cluster.demo.cluster_id
  endpoints   = redisha_cluster.demo.endpoints
  password    = var.password
  destination = "${path.root}/backups"
  retain      = 7
  triggers = {
    day = formatdate("YYYY-MM-DD", timestamp())
  }
  lifecycle {
    ignore_changes = [triggers]
  }
}

# A new cluster made from that backup: 5 shards where the backup has 3, so every key is
# loaded and routed by slot (with 3 shards each master would start from its snapshot).
resource "redisha_cluster" "copy" {
  name           = "copy"
  shards         = 5
  replicas       = 1
  node_memory_mb = 256
  password       = var.password
  persistence    = "aof"
  restore_from   = redisha_backup.daily.id
  final_backup   = "${path.root}/backups"

  zone {
    name = "zone-a"
    host {
      name      = "a-1"
      memory_mb = 4096
      max_nodes = 4
    }
  }
  zone {
    name = "zone-b"
    host {
      name      = "b-1"
      memory_mb = 4096
      max_nodes = 4
    }
  }
  zone {
    name = "zone-c"
    host {
      name      = "c-1"
      memory_mb = 4096
      max_nodes = 4
    }
  }

  local {
    data_dir       = "${path.root}/.redisha/copy"
    loopback_octet = 1
  }
}
