import SwiftUI

@main
struct MobileCLIPDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
