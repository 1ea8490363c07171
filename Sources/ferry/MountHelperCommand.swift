import ArgumentParser
import FerrySystem

/// `ferry mount-helper MOUNTPOINT --connection N` (hidden): the process a sandboxed `ferry
/// serve` leaves in the host's mount namespace to unmount its FUSE mount (see MountHelper). It
/// talks to the server on descriptor 3 and exits when the server's end closes.
struct MountHelperCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount-helper", abstract: "Unmounts for a sandboxed server (started by ferry serve).",
        shouldDisplay: false)

    @Argument(help: "The server's mount point.")
    var mountpoint: String

    @Option(help: "The FUSE connection number (device minor) of the server's mount.")
    var connection: UInt32

    func run() throws {
        MountHelper.serve(channel: 3, mountpoint: mountpoint, connection: connection)
    }
}
