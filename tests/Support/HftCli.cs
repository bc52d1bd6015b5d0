namespace HftRuntime.Tests.Support;

/// <summary>Runs the hft command line in-process.</summary>
public static class HftCli
{
    /// <summary>Runs <c>hft args</c>; returns the exit code, standard output and standard error.</summary>
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = HftRuntime.Cli.Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }
}
