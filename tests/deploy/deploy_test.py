#!/usr/bin/python3
"""Offline checks of the deployment files (packaging/cloudformation, packaging/cloud-init).

  deploy_test.py SOURCE_DIR template    every Ref, GetAtt, Sub, Condition and DependsOn resolves; resource types,
                                        properties and attributes exist in AWS's resource specification
                                        (@aws-cdk/cfnspec); IAM grants exactly what the agent calls; the network
                                        opens only what the nodes need; the user-data is packaging/cloud-init's
  deploy_test.py SOURCE_DIR lint        cfn-lint (npm, pinned in tests/deploy/package-lock.json), with the new-VPC
                                        and the existing-VPC parameters; its resource specification is older than
                                        AWS's: a property it does not know passes only if @aws-cdk/cfnspec has it
  deploy_test.py SOURCE_DIR cloud-init  `cloud-init schema` accepts both user-data files (and refuses a bad one)
  deploy_test.py SOURCE_DIR ami         the AMI recipe (packaging/ami) is formatted and `packer validate` accepts it,
                                        run where no network exists (unshare --net): nothing reaches AWS

Exit 77: skipped (a tool missing).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

PSEUDO = {"AWS::AccountId", "AWS::NoValue", "AWS::Partition", "AWS::Region", "AWS::StackId", "AWS::StackName",
          "AWS::URLSuffix", "AWS::NotificationARNs"}
# What the agent asks AWS for with the instance role: the SqsClient calls made outside the client itself (one
# method per SQS action), and the secret's value. Each must be granted, and nothing else.
SQS_CALLS_IN_CODE = re.compile(r"(?:\.|->)(SendMessage|ReceiveMessage|DeleteMessage|ChangeMessageVisibility|GetQueueUrl|CreateQueue|"
                               r"GetQueueAttributes|PurgeQueue|DeleteQueue)\(")

failures = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)


def skip(why):
    print("[  SKIPPED ] " + why)
    sys.exit(77)


def load_template(path):
    try:
        import yaml
    except ImportError:
        skip("needs python3-yaml")

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader, suffix, node):
        name = "Ref" if suffix == "Ref" else "Fn::" + suffix
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if suffix == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    Loader.add_multi_constructor("!", intrinsic)
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


def walk(node, visit, path=""):
    visit(node, path)
    if isinstance(node, dict):
        for k, v in node.items():
            walk(v, visit, path + "/" + str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, visit, path + "/" + str(i))


def spec(source):
    path = os.path.join(source, "tests/deploy/node_modules/@aws-cdk/cfnspec/spec/specification.json")
    if not os.path.exists(path):
        skip("no @aws-cdk/cfnspec: run `npm ci --prefix tests/deploy` (scripts/test does)")
    with open(path) as f:
        return json.load(f)


def test_template(source):
    t = load_template(os.path.join(source, "packaging/cloudformation/dlagent-cluster.yaml"))
    s = spec(source)
    params, resources, conditions = t.get("Parameters", {}), t["Resources"], t.get("Conditions", {})
    names = set(params) | set(resources) | PSEUDO
    bad = []

    def attribute_ok(resource, attribute):
        if resource not in resources:
            return False
        rtype = resources[resource]["Type"]
        return attribute in s["ResourceTypes"].get(rtype, {}).get("Attributes", {})

    def visit(node, path):
        if not isinstance(node, dict) or len(node) != 1:
            return
        (k, v), = node.items()
        if k == "Ref" and v not in names:
            bad.append(f"{path}: Ref {v}")
        elif k == "Fn::GetAtt" and not attribute_ok(v[0], v[1]):
            bad.append(f"{path}: GetAtt {v[0]}.{v[1]}")
        elif k == "Fn::Sub":
            text, variables = (v, {}) if isinstance(v, str) else (v[0], v[1])
            for ref in re.findall(r"\$\{([^!}][^}]*)\}", text):
                if ref in variables or ref in names:
                    continue
                if "." in ref and attribute_ok(*ref.split(".", 1)):
                    continue
                bad.append(f"{path}: Sub ${{{ref}}}")
        elif k == "Fn::If" and v[0] not in conditions:
            bad.append(f"{path}: If {v[0]}")
        elif k == "Condition" and isinstance(v, str) and v not in conditions:
            bad.append(f"{path}: Condition {v}")

    walk({k: t[k] for k in ("Conditions", "Resources", "Outputs") if k in t}, visit)
    for name, r in resources.items():
        if "Condition" in r and r["Condition"] not in conditions:
            bad.append(f"{name}: Condition {r['Condition']}")
        for d in [r["DependsOn"]] if isinstance(r.get("DependsOn"), str) else r.get("DependsOn", []):
            if d not in resources:
                bad.append(f"{name}: DependsOn {d}")
    check(not bad, "every Ref, GetAtt, Sub, If, Condition and DependsOn resolves" + (": " + "; ".join(bad) if bad else ""))

    # Names against AWS's specification (1,000+ types): types, their properties, and the properties of the
    # nested structures this template writes.
    bad = []
    for name, r in resources.items():
        rspec = s["ResourceTypes"].get(r["Type"])
        if rspec is None:
            bad.append(f"{name}: type {r['Type']}")
            continue
        for prop in r.get("Properties", {}):
            if prop not in rspec["Properties"]:
                bad.append(f"{name}: {r['Type']}.{prop}")
        for prop, pspec in rspec["Properties"].items():
            if pspec.get("Required") and prop not in r.get("Properties", {}):
                bad.append(f"{name}: {r['Type']} needs {prop}")
    nested = {"AWS::EC2::LaunchTemplate.LaunchTemplateData": resources["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"],
              "AWS::EC2::LaunchTemplate.MetadataOptions": resources["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"],
              "AWS::SecretsManager::Secret.GenerateSecretString": resources["ClusterKey"]["Properties"]["GenerateSecretString"]}
    for ptype, value in nested.items():
        for prop in value:
            if prop not in s["PropertyTypes"][ptype]["Properties"]:
                bad.append(f"{ptype}.{prop}")
    check(not bad, f"types and property names exist in the resource specification ({len(s['ResourceTypes'])} types)" +
          (": " + "; ".join(bad) if bad else ""))

    by_type = {}
    for name, r in resources.items():
        by_type.setdefault(r["Type"], []).append(name)
    check(len(by_type.get("AWS::AutoScaling::AutoScalingGroup", [])) == 1, "one Auto Scaling group")
    check(not [t for t in by_type if t.startswith("AWS::Lambda::") or t.startswith("Custom::") or t == "AWS::CloudFormation::CustomResource"],
          "no Lambda, no custom resource")
    queues = by_type.get("AWS::SQS::Queue", [])
    check(len(queues) == 1 and resources[queues[0]]["Properties"].get("SqsManagedSseEnabled") is True,
          "one queue, with server-side encryption")
    group = resources["NodeGroup"]["Properties"]
    check(group["MinSize"] == group["MaxSize"] == group["DesiredCapacity"] == {"Ref": "NodeCount"}, "the group is NodeCount nodes")
    wait = resources["ClusterReady"]
    check(wait["Type"] == "AWS::CloudFormation::WaitCondition" and wait["Properties"]["Count"] == {"Ref": "NodeCount"} and
          wait["Properties"]["Handle"] == {"Ref": "WaitHandle"}, "a WaitCondition on the handle with Count = NodeCount")
    ssm = params["ImageParameter"]
    check(ssm["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>" and ssm["Default"].startswith("/aws/service/deeplearning/ami/"),
          "the image defaults to a Deep Learning AMI through its public SSM parameter")
    check(resources["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]["MetadataOptions"]["HttpTokens"] == "required",
          "instances answer IMDSv2 only")
    mounts = [resources[n]["Properties"]["SubnetId"] for n in by_type.get("AWS::EFS::MountTarget", [])]
    subnets = group["VPCZoneIdentifier"]["Fn::If"]
    check(len(mounts) == 2 and [m["Fn::If"][1] for m in mounts] == subnets[1] and [m["Fn::If"][2] for m in mounts] == subnets[2],
          "an EFS mount target in each of the group's subnets")

    # IAM: the node role grants exactly the agent's calls, on this stack's queue and secret.
    role = resources["NodeRole"]["Properties"]
    statements = [st for p in role.get("Policies", []) for st in p["PolicyDocument"]["Statement"]]
    grants = {}
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        check(st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st, f"statement {st.get('Sid')}: a plain Allow")
        for a in actions:
            grants.setdefault(a, []).append(st["Resource"])
    check(not role.get("ManagedPolicyArns") and all("*" not in a for a in grants), "no managed policies, no wildcard actions")
    code = ""
    for top in ("agent", "bootstrap"):
        for d, _, files in os.walk(os.path.join(source, top)):
            for f in files:
                if f.endswith(".cc") and f != "sqs_client.cc":
                    with open(os.path.join(d, f)) as fh:
                        code += fh.read()
    used = {"sqs:" + a for a in SQS_CALLS_IN_CODE.findall(code)}
    queue_grants = {a for a in grants if a.startswith("sqs:")}
    check(used and used == queue_grants, f"SQS: granted {sorted(queue_grants)} = called by the agent {sorted(used)}")
    check(all(r == [{"Fn::GetAtt": ["Queue", "Arn"]}] for a, r in grants.items() if a.startswith("sqs:")), "SQS actions on this queue only")
    check(grants.get("secretsmanager:GetSecretValue") == [{"Ref": "ClusterKey"}], "GetSecretValue on the cluster's secret only")
    check(set(grants) == queue_grants | {"secretsmanager:GetSecretValue"}, f"nothing else granted: {sorted(grants)}")
    secret = resources["ClusterKey"]["Properties"]["GenerateSecretString"]
    alphabet = set("0123456789abcdefghijklmnopqrstuvwxyz") - set(secret.get("ExcludeCharacters", ""))
    check(secret["PasswordLength"] == 64 and secret.get("ExcludeUppercase") and secret.get("ExcludePunctuation") and
          not secret.get("IncludeSpace") and alphabet == set("0123456789abcdef"), "the generated secret is a cluster key (64 hex characters)")

    # Network: nothing from outside; gossip (UDP, TCP), dlps and NFS between the nodes.
    ingress = []
    for name in by_type.get("AWS::EC2::SecurityGroupIngress", []):
        ingress.append(resources[name]["Properties"])
    for name in by_type.get("AWS::EC2::SecurityGroup", []):
        for rule in resources[name]["Properties"].get("SecurityGroupIngress", []):
            ingress.append(dict(rule, GroupId={"Ref": name}))
    check(all("CidrIp" not in r and "CidrIpv6" not in r and "SourcePrefixListId" not in r for r in ingress), "no ingress from addresses")

    def opened(group_name, proto, port):
        return any(r["GroupId"] == {"Ref": group_name} and r["SourceSecurityGroupId"] == {"Ref": "NodeSecurityGroup"} and
                   r["IpProtocol"] == proto and r["FromPort"] <= port <= r["ToPort"] for r in ingress)

    for what, g, proto, port in (("gossip", "NodeSecurityGroup", "udp", 7946), ("gossip and job calls", "NodeSecurityGroup", "tcp", 7946),
                                 ("dlps", "NodeSecurityGroup", "tcp", 7070), ("NFS", "EfsSecurityGroup", "tcp", 2049)):
        check(opened(g, proto, port), f"{what}: {proto} {port} open from the nodes")

    # The user-data is the cloud-init files, as they are.
    data = resources["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::If"]
    for branch, f in ((data[1], "baked.yaml"), (data[2], "install.yaml")):
        with open(os.path.join(source, "packaging/cloud-init", f)) as fh:
            want = fh.read()
        check(branch["Fn::Base64"]["Fn::Sub"] == want,
              f"user-data is packaging/cloud-init/{f} (copy the file into the template when either changes)")
        check(len(want.encode()) < 16384, f"{f} fits in user-data (16 KB)")


def test_lint(source):
    lint = os.path.join(source, "tests/deploy/node_modules/.bin/cfn-lint")
    if not os.path.exists(lint):
        skip("no cfn-lint: run `npm ci --prefix tests/deploy` (scripts/test does)")
    s = spec(source)
    template = os.path.join(source, "packaging/cloudformation/dlagent-cluster.yaml")
    existing = ("VpcId=vpc-0123abcd,SubnetIdA=subnet-0123abcd,SubnetIdB=subnet-4567abcd,PackageUrl=https://example.com/dlagent.deb,"
                "PackageSha256=" + "0" * 64 + ",KeyName=ops,ImageId=ami-0123456789abcdef0")
    for label, args in (("a new VPC, a baked AMI", []), ("an existing VPC, the package from a URL", ["--parameters", existing])):
        out = subprocess.run([lint, "validate", template, *args], capture_output=True, text=True, timeout=120)
        text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
        messages = re.findall(r"^Message: (.*)$", text, re.M)
        outdated, real = [], []
        for m in messages:
            known = re.match(r"(\w+) is not a valid property of (\S+)$", m)
            if known:
                prop, owner = known.groups()
                table = s["ResourceTypes"] if owner in s["ResourceTypes"] else s["PropertyTypes"]
                if prop in table.get(owner, {}).get("Properties", {}):
                    outdated.append(f"{owner}.{prop}")
                    continue
            real.append(m)
        if outdated:
            print(f"note: cfn-lint's resource specification lacks {', '.join(outdated)}; @aws-cdk/cfnspec has them")
        ran = "Template valid" in text or "Template invalid" in text
        check(ran and not real, f"cfn-lint, {label}" + (": " + "; ".join(real) if real else "" if ran else ": " + text[-300:]))


def run_runcmd_scripts(source):
    """Each file's runcmd script, run with curl, apt-get, dnf and systemctl replaced by recorders and the image's
    /etc/os-release given: a step that fails PUTs FAILURE, naming it, to the wait handle; when every step works,
    the image's package (.deb on Debian and Ubuntu, .rpm on Amazon Linux) is installed and the agent enabled and
    started."""
    import hashlib
    import yaml
    handle = "https://wait.example.com/handle"
    ubuntu = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\n'
    amazon = 'NAME="Amazon Linux"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n'
    other = 'NAME="Other"\nID=other\n'

    def run(f, curl_download_ok, sha256=None, os_release=ubuntu, url="https://example.com/dlagent_0.1.0-1_amd64.deb"):
        with open(os.path.join(source, "packaging/cloud-init", f)) as fh:
            cmd = yaml.safe_load(fh)["runcmd"][0]
        values = {"${PackageUrl}": url, "${PackageSha256}": sha256 or "0" * 64, "${WaitHandle}": handle}
        cmd = [values.get(c, c) for c in cmd]
        with tempfile.TemporaryDirectory() as bin_dir:
            log = os.path.join(bin_dir, "calls")
            fakes = {
                # -o FILE: the download, which writes "package" or fails as a 404 does; else a signal PUT.
                "curl": 'echo "curl $*" >>' + log + '\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done\n'
                        'if [ -n "$out" ]; then ' + ('printf package >"$out"' if curl_download_ok else "exit 22") + "; fi\n",
                "apt-get": 'echo "apt-get $*" >>' + log + "\n",
                "dnf": 'echo "dnf $*" >>' + log + "\n",
                "systemctl": 'echo "systemctl $*" >>' + log + "\n",
            }
            for name, body in fakes.items():
                path = os.path.join(bin_dir, name)
                with open(path, "w") as fh:
                    fh.write("#!/bin/sh\n" + body)
                os.chmod(path, 0o755)
            release = os.path.join(bin_dir, "os-release")
            with open(release, "w") as fh:
                fh.write(os_release)
            env = dict(os.environ, PATH=bin_dir + ":/usr/bin:/bin", DLAGENT_OS_RELEASE=release)
            subprocess.run(cmd, env=env, capture_output=True, timeout=60)
            return open(log).read() if os.path.exists(log) else ""

    if not os.path.exists("/usr/sbin/agentd"):  # this machine is an image without dlagent
        calls = run("baked.yaml", True)
        body = calls[calls.find("{"):calls.rfind("}") + 1]
        try:
            signal = json.loads(body)
        except ValueError:
            signal = {}
        check(signal.get("Status") == "FAILURE" and "dlagent is not installed on this image" in signal.get("Reason", "") and
              handle in calls and "systemctl" not in calls, "baked.yaml on an image without dlagent signals FAILURE, saying so: " + body)
    calls = run("install.yaml", False)
    check("cannot download the dlagent package" in calls and handle in calls and "apt-get" not in calls,
          "install.yaml: a download that fails signals FAILURE and installs nothing")
    calls = run("install.yaml", True, sha256="1" * 64)
    check("does not match PackageSha256" in calls and "apt-get" not in calls, "install.yaml: a package that does not match its SHA-256 is refused")
    good = hashlib.sha256(b"package").hexdigest()
    calls = run("install.yaml", True, sha256=good)
    check("apt-get install" in calls and "force-confold" in calls and "/var/tmp/dlagent.deb nfs-common" in calls and "dnf" not in calls
          and "systemctl enable --now agentd.service dlagent-ready.target" in calls and "FAILURE" not in calls,
          "install.yaml on Ubuntu: the .deb is installed with apt, keeping the configuration, and the agent started")
    calls = run("install.yaml", True, sha256=good, os_release=amazon, url="https://example.com/dlagent-0.1.0-1.x86_64.rpm?X-Amz-Signature=1")
    check("dnf install -y /var/tmp/dlagent.rpm nfs-utils" in calls and "apt-get" not in calls
          and "systemctl enable --now agentd.service dlagent-ready.target" in calls and "FAILURE" not in calls,
          "install.yaml on Amazon Linux 2023: the .rpm (a presigned URL) is installed with dnf, and the agent started")
    calls = run("install.yaml", True, sha256=good, os_release=amazon)
    check("takes the .rpm package; PackageUrl names another" in calls and "dnf" not in calls and "curl -fsSL" not in calls,
          "install.yaml on Amazon Linux with the .deb's URL signals FAILURE, naming the package it takes")
    calls = run("install.yaml", True, sha256=good, os_release=other)
    check("no package for this image (other)" in calls and "curl -fsSL" not in calls,
          "install.yaml on an image of another family signals FAILURE, pointing to the tarball")


def test_cloud_init(source):
    if not os.path.exists("/usr/bin/cloud-init"):
        skip("needs cloud-init (apt-get install cloud-init)")
    for f in ("baked.yaml", "install.yaml"):
        path = os.path.join(source, "packaging/cloud-init", f)
        out = subprocess.run(["/usr/bin/cloud-init", "schema", "--config-file", path], capture_output=True, text=True, timeout=120)
        check(out.returncode == 0 and "Valid cloud-config" in out.stdout, f"cloud-init schema accepts {f}" +
              ("" if out.returncode == 0 else ": " + (out.stdout + out.stderr).strip()[-400:]))
    run_runcmd_scripts(source)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as bad:
        bad.write("#cloud-config\nwrite_files:\n  - path: 7\nruncmd: yes\n")
        bad.flush()
        out = subprocess.run(["/usr/bin/cloud-init", "schema", "--config-file", bad.name], capture_output=True, text=True, timeout=120)
        check(out.returncode != 0, "cloud-init schema refuses a bad file (the check can fail)")


def test_ami(source):
    if not os.path.exists("/usr/bin/packer"):
        skip("needs packer (apt-get install packer)")
    if os.geteuid() != 0:
        skip("needs root (packer validate runs without a network: unshare --net)")
    recipe = os.path.join(source, "packaging/ami/dlagent.pkr.hcl")
    out = subprocess.run(["/usr/bin/packer", "fmt", "-check", "-diff", recipe], capture_output=True, text=True, timeout=60)
    check(out.returncode == 0, "packer fmt: the recipe is formatted" + ("" if out.returncode == 0 else ": " + out.stdout[-400:]))
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="unused", CHECKPOINT_DISABLE="1")
    validate = ["unshare", "--net", "/usr/bin/packer", "validate", "-var", "package=" + recipe]
    out = subprocess.run(validate + [recipe], capture_output=True, text=True, timeout=120, env=env)
    check(out.returncode == 0, "packer validate accepts the recipe" + ("" if out.returncode == 0 else ": " + (out.stdout + out.stderr)[-400:]))
    with tempfile.NamedTemporaryFile("w", suffix=".pkr.hcl") as bad:
        bad.write(open(recipe).read().replace('ssh_username  = "admin"', 'ssh_username  = "admin"\n  no_such_setting = 1'))
        bad.flush()
        out = subprocess.run(validate + [bad.name], capture_output=True, text=True, timeout=120, env=env)
        check(out.returncode != 0, "packer validate refuses an unknown setting (the check can fail)")


if __name__ == "__main__":
    checks = {"template": test_template, "lint": test_lint, "cloud-init": test_cloud_init, "ami": test_ami}
    if len(sys.argv) != 3 or sys.argv[2] not in checks:
        print(__doc__)
        sys.exit(2)
    checks[sys.argv[2]](sys.argv[1])
    if failures:
        print(f"{len(failures)} checks failed")
        sys.exit(1)
    print("all checks passed")
