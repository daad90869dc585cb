import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "com.dbd.demo"
    compileSdk = 36

    defaultConfig {
        applicationId = "com.dbd.demo"
        minSdk = 24
        targetSdk = 36
        versionCode = 1
        versionName = "1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    buildFeatures {
        viewBinding = true
    }

    // The model is memory-mapped by LiteRT straight from the APK: it must be stored uncompressed.
    androidResources {
        noCompress += "tflite"
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

/**
 * Puts the exported model into the app's assets as `dbd_model.tflite` (the name the app opens).
 * The source is the repository's export, `../exports/dbd_student_320_int8.tflite` (relative to
 * android_demo/), or `-Pdbd.model=PATH`. Nothing is downloaded: a missing file stops the build
 * and says how to make one. The app reads the input size, normalisation, layout and quantisation
 * from the metadata inside the file, so any dbd-export .tflite can be swapped in this way.
 */
abstract class CopyDbdModel : DefaultTask() {
    @get:InputFiles
    @get:PathSensitive(PathSensitivity.NONE)
    abstract val model: ConfigurableFileCollection

    @get:Input
    abstract val modelPath: Property<String>

    @get:OutputDirectory
    abstract val outputDirectory: DirectoryProperty

    @TaskAction
    fun copy() {
        val source = model.files.single()
        if (!source.isFile) {
            throw GradleException(
                "dbd model '${modelPath.get()}' not found ($source). Export one from the repository root with " +
                    "`dbd-export --format tflite` (writes exports/dbd_student_320_int8.tflite) or pass -Pdbd.model=PATH.",
            )
        }
        val out = outputDirectory.get().asFile
        out.deleteRecursively()
        out.mkdirs()
        source.copyTo(out.resolve(MODEL_ASSET), overwrite = true)
    }

    companion object {
        const val MODEL_ASSET = "dbd_model.tflite"
    }
}

val copyDbdModel = tasks.register<CopyDbdModel>("copyDbdModel") {
    group = "dbd"
    description = "Copies the exported .tflite (-Pdbd.model, default ../exports/dbd_student_320_int8.tflite) into the assets."
    // Locals only in the provider lambda (configuration-cache safe): relative paths are from android_demo/.
    val demoRoot: Directory = rootProject.layout.projectDirectory
    val path: Provider<String> = providers.gradleProperty("dbd.model").orElse("../exports/dbd_student_320_int8.tflite")
    modelPath.set(path)
    model.from(path.map { p -> File(p).takeIf { it.isAbsolute } ?: demoRoot.file(p).asFile })
}

androidComponents {
    onVariants { variant ->
        variant.sources.assets?.addGeneratedSourceDirectory(copyDbdModel, CopyDbdModel::outputDirectory)
    }
}

dependencies {
    implementation(project(":core"))
    implementation(libs.litert)

    implementation(libs.androidx.core.ktx)
    implementation(libs.androidx.appcompat)
    implementation(libs.androidx.activity.ktx)
    implementation(libs.androidx.fragment.ktx)
    implementation(libs.androidx.constraintlayout)
    implementation(libs.material)
    implementation(libs.androidx.lifecycle.runtime.ktx)
    implementation(libs.androidx.lifecycle.viewmodel.ktx)
    implementation(libs.androidx.navigation.fragment.ktx)
    implementation(libs.androidx.navigation.ui.ktx)
    implementation(libs.androidx.camera.core)
    implementation(libs.androidx.camera.camera2)
    implementation(libs.androidx.camera.lifecycle)
    implementation(libs.androidx.camera.view)
    implementation(libs.androidx.exifinterface)
    implementation(libs.kotlinx.coroutines.android)

    testImplementation(libs.junit)
}
