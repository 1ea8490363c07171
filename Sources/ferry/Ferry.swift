import ArgumentParser

/// The `ferry` command.
@main
struct Ferry: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Share a host directory with containers and VMs over FUSE.",
        subcommands: [Serve.self])
}
