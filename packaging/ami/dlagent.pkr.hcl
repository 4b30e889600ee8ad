# An AMI with dlagent baked in: Debian 12 (the release scripts/package builds for), NVIDIA's driver from Debian's
# non-free archive, NFS, and the dlagent package, enabled but not configured. A node of this image joins a
# cluster once user-data writes /etc/dlagent/agentd.toml (packaging/cloud-init/baked.yaml; the CloudFormation
# template does it with ImageId set to this image).
#
#   scripts/package
#   packer build -var package=build-deb/dlagent_0.1.0-1_amd64.deb -var region=us-east-1 packaging/ami/dlagent.pkr.hcl
#
# It needs AWS credentials allowed to run an instance and register an image (docs/deploy.md).

variable "package" {
  type        = string
  description = "The dlagent .deb to install (scripts/package), built for Debian 12."
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "instance_type" {
  type        = string
  default     = "c6i.xlarge"
  description = "The builder instance: the driver is built with DKMS, which needs no GPU."
}

variable "ami_name_prefix" {
  type    = string
  default = "dlagent-debian-12"
}

source "amazon-ebs" "debian12" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = "admin"
  ami_name      = "${var.ami_name_prefix}-${formatdate("YYYYMMDD-hhmm", timestamp())}"
  # Debian's own images (the Debian cloud team's account).
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["136693071363"]
    most_recent = true
  }
  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 40
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    delete_on_termination = true
  }
  tags = {
    Name    = "${var.ami_name_prefix}"
    dlagent = "baked"
  }
}

build {
  sources = ["source.amazon-ebs.debian12"]

  provisioner "file" {
    source      = var.package
    destination = "/tmp/dlagent.deb"
  }

  provisioner "shell" {
    execute_command  = "sudo -E sh -eux '{{ .Path }}'"
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    inline = [
      # NVIDIA's driver is in non-free (built for the running cloud kernel by DKMS).
      "sed -i 's/^Components: main.*/Components: main contrib non-free non-free-firmware/' /etc/apt/sources.list.d/*.sources",
      "apt-get update",
      "apt-get install -y --no-install-recommends linux-headers-cloud-amd64 nvidia-driver nvidia-smi firmware-misc-nonfree nfs-common",
      # dlagent: installed, enabled for boot, not configured (it starts nothing until user-data configures it).
      "apt-get install -y /tmp/dlagent.deb",
      "rm -f /tmp/dlagent.deb",
      "systemctl enable agentd.service dlagent-ready.target",
      "test ! -e /etc/dlagent/cluster.key",
      # Every instance of the image runs its own user-data, and gets its own identity.
      "cloud-init clean --logs",
      "truncate -s 0 /etc/machine-id",
      "apt-get clean",
    ]
  }
}
