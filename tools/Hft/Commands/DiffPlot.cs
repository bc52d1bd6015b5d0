using System.Globalization;
using HftRuntime.Model;
using ScottPlot;

namespace HftRuntime.Cli.Commands;

/// <summary>Draws the layer × category table of a <see cref="ParameterDiff"/> as a heat map (ScottPlot, headless).</summary>
internal static class DiffPlot
{
    /// <summary>Above this many layers the cells are too small for their numbers.</summary>
    private const int MaxAnnotatedLayers = 48;

    /// <summary>Writes the heat map as a PNG to <paramref name="path"/>.</summary>
    public static void Save(ParameterDiff diff, string path)
    {
        int layers = diff.Layers, categories = ParameterDiff.LayerCategories.Count;
        var values = diff.LayerTable();
        var table = new double[layers, categories];
        double max = 0;
        for (int l = 0; l < layers; l++)
        {
            for (int c = 0; c < categories; c++)
            {
                double v = values[l, c];
                // Unchanged tensors (HFT's frozen half) are left blank, so that they stand apart from small changes.
                table[l, c] = double.IsFinite(v) && v != 0 ? v : double.NaN;
                if (double.IsFinite(v)) max = Math.Max(max, v);
            }
        }

        var plot = new Plot();
        if (table.Cast<double>().Any(double.IsFinite))
        {
            // Row 0 of the data is drawn at the top, at y = layers - 1; cell centres sit on integer coordinates.
            var heatmap = plot.Add.Heatmap(table);
            heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
            heatmap.ManualRange = new ScottPlot.Range(0, max);
            var colorBar = plot.Add.ColorBar(heatmap);
            colorBar.Label = "‖θ − θ₀‖ / ‖θ₀‖";
        }
        // else every tensor is unchanged: ScottPlot cannot scale a heat map without a value, so only the numbers show.
        plot.Axes.SetLimits(-0.5, categories - 0.5, -0.5, layers - 0.5);

        if (layers <= MaxAnnotatedLayers)
        {
            float fontSize = layers <= 16 ? 12 : layers <= 32 ? 10 : 8;
            for (int l = 0; l < layers; l++)
            {
                for (int c = 0; c < categories; c++)
                {
                    double v = values[l, c];
                    var text = plot.Add.Text(ParameterDiff.Format(v), c, layers - 1 - l);
                    text.LabelFontSize = fontSize;
                    text.LabelAlignment = Alignment.MiddleCenter;
                    // Viridis is dark at the bottom and light at the top; blank cells get dark text.
                    text.LabelFontColor = double.IsNaN(table[l, c]) || v > 0.6 * max ? Colors.Black : Colors.White;
                }
            }
        }

        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            Enumerable.Range(0, categories).Select(c => (double)c).ToArray(), ParameterDiff.LayerCategories.ToArray());
        int step = Math.Max(1, (layers + 31) / 32);
        var rows = Enumerable.Range(0, layers).Where(l => l % step == 0).ToArray();
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            rows.Select(l => (double)(layers - 1 - l)).ToArray(), rows.Select(l => l.ToString(CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Left.Label.Text = "layer";
        string outside = $"embed_tokens {ParameterDiff.Format(diff.EmbedTokens.Relative)}" +
            (diff.LmHead is { } head ? $", lm_head {ParameterDiff.Format(head.Relative)}" : ", lm_head tied") +
            $", final norm {ParameterDiff.Format(diff.FinalNorm.Relative)}";
        plot.Axes.Bottom.Label.Text = $"tensor (blank: unchanged, bit-identical to the base)\noutside the layers: {outside}";
        plot.Axes.Bottom.Label.FontSize = 13;
        plot.Axes.Bottom.Label.Bold = false;
        plot.Title($"Relative change per tensor: {Name(diff.TunedDirectory)} vs base {Name(diff.BaseDirectory)}");
        plot.Grid.IsVisible = false;

        int height = Math.Clamp(150 + 30 * layers, 380, 2400);
        plot.SavePng(path, 1100, height);
    }

    private static string Name(string directory) => Path.GetFileName(Path.TrimEndingDirectorySeparator(directory));
}
