import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// Pure Kotlin/JVM: everything that decides what the model sees and what the user sees (metadata,
// preprocessing, postprocessing, overlay colours) lives here, with no android.* import, so it is
// unit-tested on any JVM and, from ../tests/test_android.py, against the Python runtime.
plugins {
    `java-library`
    alias(libs.plugins.kotlin.jvm)
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

dependencies {
    testImplementation(libs.junit)
}

tasks.test {
    // Golden vectors written by the Python runtime (see ../README.md): ./gradlew :core:test -Pdbd.golden=DIR
    // Without them GoldenParityTest is skipped (an assumption), the other tests run as usual.
    providers.gradleProperty("dbd.golden").orNull?.let { systemProperty("dbd.golden", it) }
    maxHeapSize = "1g"
}
