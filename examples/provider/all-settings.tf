provider "redisha" {
  region   = "eu-west-1"                                          # default: AWS_REGION, then AWS_DEFAULT_REGION
  endpoint = "https://vpce-0123.ec2.eu-west-1.vpce.amazonaws.com" # optional EC2 endpoint override
  assume_role {                                                   # optional
    role_arn     = "arn:aws:iam::123456789012:role/redisha"
    session_name = "redisha" # default redisha
    external_id  = "..."     # if the trust policy requires one
  }
}
