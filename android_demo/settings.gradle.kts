pluginManagement {
    repositories {
        google {
            content {
                includeGroupByRegex("com\\.android.*")
                includeGroupByRegex("com\\.google.*")
                includeGroupByRegex("androidx.*")
            }
        }
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "dbd-android-demo"

// :core is plain Kotlin/JVM (no Android): the contract, preprocessing, postprocessing and overlays,
// unit-tested on any JVM and against the Python runtime (../tests/test_android.py).
include(":app", ":core")
