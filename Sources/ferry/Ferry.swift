import ArgumentParser

/// The `ferry` command: `ferry serve SOURCE MOUNTPOINT` serves in the foreground;
/// `ferry SOURCE MOUNTPOINT -o OPTS` (what mount.fuse3 runs) mounts and serves in the background.
@main
struct Ferry: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Share a host directory with containers and VMs over FUSE.",
        subcommands: [Serve.self, MountCommand.self],
        defaultSubcommand: MountCommand.self)
}
