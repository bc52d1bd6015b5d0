// ILGPU's CPU accelerator runs kernels through a dynamic assembly named ILGPURuntime; it must see the internal
// argument structs (RopeArgs, GemmArgs, ...) of the kernels.
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("ILGPURuntime")]
