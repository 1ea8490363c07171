import ArgumentParser

/// The `ferry` command: `ferry serve SOURCE MOUNTPOINT` serves in the foreground;
/// `ferry SOURCE MOUNTPOINT -o OPTS` (what mount.fuse3 runs) mounts and serves in the background.
@main
struct Ferry: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Share a host directory with containers and VMs over FUSE.",
        subcommands: [Serve.self, Virtiofsd.self, MountCommand.self, HostHelperCommand.self],
        defaultSubcommand: MountCommand.self)

    /// Run under a name ending in `virtiofsd` (a symlink libvirt's `<binary path=.../>` names),
    /// Ferry takes virtiofsd's command line.
    static func main() {
        let name = CommandLine.arguments.first?.split(separator: "/").last.map(String.init) ?? ""
        if name.hasSuffix("virtiofsd") {
            Virtiofsd.main(Array(CommandLine.arguments.dropFirst()))
        } else {
            Ferry.main(nil)
        }
    }
}
