using System.Text.Json.Nodes;
using HftRuntime.Runtime;
using ScottPlot;

namespace HftRuntime.Cli.Commands;

/// <summary>The demo's figure: the fine-tuning curves of FFT and HFT, and the perplexity on corpus A before and after.</summary>
internal static class DemoPlot
{
    /// <summary>Writes the PNG.</summary>
    public static void Save(JsonObject report, string path)
    {
        var curves = new Plot();
        foreach (var (method, color) in new[] { ("fft", Colors.OrangeRed), ("hft", Colors.SteelBlue) })
        {
            var losses = report[method]!["losses"]!.AsArray().Select(JsonNumbers.ToDouble).ToArray();
            var line = curves.Add.Signal(losses);
            line.LegendText = method.ToUpperInvariant();
            line.Color = color;
        }
        curves.Title("Fine-tuning on task B");
        curves.XLabel("step");
        curves.YLabel("training loss");
        curves.ShowLegend();

        var bars = new Plot();
        double[] values = [JsonNumbers.ToDouble(report["base_ppl_before"]), JsonNumbers.ToDouble(report["fft"]!["base_ppl_after"]),
            JsonNumbers.ToDouble(report["hft"]!["base_ppl_after"])];
        string[] labels = ["base", "FFT", "HFT"];
        Color[] colors = [Colors.Gray, Colors.OrangeRed, Colors.SteelBlue];
        for (int i = 0; i < 3; i++)
        {
            var bar = bars.Add.Bar(position: i, value: values[i]);
            bar.Color = colors[i];
        }
        bars.Axes.Bottom.SetTicks([0, 1, 2], labels);
        bars.Axes.Margins(bottom: 0);
        bars.Title("Perplexity on corpus A (lower: less forgotten)");
        bars.YLabel("perplexity");

        var figure = new Multiplot();
        figure.Reset(curves);
        figure.AddPlot(bars);
        figure.Layout = new ScottPlot.MultiplotLayouts.Columns();
        figure.SavePng(path, 1400, 520);
    }
}
